// Paged attention over the KV cache, read in place, and the K/V cache write.
//
// C++ entry points for a fused model forward (namespace astrai); the same functions are
// registered as torch operators by module.cpp.
//
// Batch invariance: every query vector (one query row of one head) is computed by the same
// sequence of float operations whatever else is in the call, however its sequence's prompt was
// chunked, and on any number of threads:
//   q' = q * c, c = float(scale) * log2(e);  visible keys [lo, pos] (lo = pos - window + 1, or 0);
//   the keys split into pieces of 128 and tiles of 32 at absolute key positions (multiples of
//   128 / 32), each intersected with [lo, pos]; per piece, starting from M = -inf, l = 0, o = 0,
//   for each tile in key order:
//     s_n  = dot(q', k_n): eight lane sums over d (lane i takes d = i mod 8, FMAs in d order),
//            then tree(l) = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
//     Mn   = max(M, max_n s_n);  alpha = exp2(M - Mn);  p_n = exp2(s_n - Mn)  (exp2: simd.h)
//     l    = fma(l, alpha, tree(t))  where lane i of t adds, from 0 and in key order, the weights
//            of the tile's keys whose offset in the tile is i mod 8
//     o[d] = o[d] * alpha, then o[d] = fma(p_n, v_n[d], o[d]) in key order;  M = Mn
//   then the pieces in order: top = max M_k, w_k = exp2(M_k - top),
//   total = fma(w_k, l_k, total), acc[d] = fma(w_k, o_k[d], acc[d]) from 0; out = acc * (1/total).
// (One piece gives out = o * (1/l) exactly.) astrai.model.kernels.attention's torch twin runs the
// same algorithm.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace astrai {

// Causal GQA attention of T query rows of B sequences over their paged K/V, in one call.
//
//   q               [T, H, D] float32; any strides for dims 0 and 1, dim 2 contiguous (a view
//                   of a fused qkv projection output is fine)
//   k_cache/v_cache [num_pages, page_size, KVH, D] float32, float16 or bfloat16, contiguous,
//                   the same dtype; H must be a multiple of KVH (query head h reads KV head
//                   h / (H / KVH))
//   block_tables    [B, max_pages] int32: sequence b's pages in order
//   context_lens    [B] int32: sequence b's tokens in the cache, this step's included
//   query_start_loc [B+1] int32: sequence b's queries are rows qsl[b] .. qsl[b+1]-1, the LAST
//                   positions of its context (their K/V already written), so row qsl[b] + i
//                   has position context_lens[b] - q_len_b + i
//   scale           softmax scale (usually 1/sqrt(D))
//   window          > 0: a query at position p sees keys p - window + 1 .. p (sliding window);
//                   0: every key up to p
//   out             [T, H, D] float32, written; dim 2 contiguous, other strides free
//
// Any mix of decode rows, chunks after a cached prefix and fresh prefills. D must be a
// multiple of 8. Math in float32; K/V converted on the fly.
void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& block_tables, const at::Tensor& context_lens,
                     const at::Tensor& query_start_loc, double scale, int64_t window, const at::Tensor& out);

// Write new K/V rows into the cache, converted to its dtype (round to nearest even).
//
//   k, v            [T, KVH, D] float32; dim 2 contiguous, other strides free
//   k_cache/v_cache [num_pages, page_size, KVH, D], contiguous, written in place
//   slot_mapping    [T] int64: row t goes to slot page * page_size + offset; -1 = skip
void kv_write(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
              const at::Tensor& slot_mapping);

}  // namespace astrai
