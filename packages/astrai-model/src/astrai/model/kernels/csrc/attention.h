// Paged attention over the KV cache, read in place, and the K/V cache write.
//
// C++ entry points for a fused model forward (namespace astrai); the same functions are
// registered as torch.ops.astrai.paged_attention / torch.ops.astrai.kv_write for Python.
#pragma once

#include <ATen/ATen.h>

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
//                   attends keys 0 .. context_lens[b] - q_len_b + i
//   scale           softmax scale (usually 1/sqrt(D))
//   out             [T, H, D] float32, written; dim 2 contiguous, other strides free
//
// Any mix of decode rows, chunks after a cached prefix and fresh prefills. D must be a
// multiple of 8. Math in float32; K/V converted on the fly. Threads: at::get_num_threads().
void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& block_tables, const at::Tensor& context_lens,
                     const at::Tensor& query_start_loc, double scale, const at::Tensor& out);

// Write new K/V rows into the cache, converted to its dtype (round to nearest even).
//
//   k, v            [T, KVH, D] float32; dim 2 contiguous, other strides free
//   k_cache/v_cache [num_pages, page_size, KVH, D], contiguous, written in place
//   slot_mapping    [T] int64: row t goes to slot page * page_size + offset; -1 = skip
void kv_write(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
              const at::Tensor& slot_mapping);

}  // namespace astrai
