// Paged attention that reads K/V pages in place (AVX2 + FMA + F16C), and the cache write.
//
// One call covers every sequence of a ragged batch. The work is cut into items; all query heads
// of a GQA group ride in the same item, so each K/V row is read once for the whole group.
// Decode-sized sequences (few query vectors) make one item over all their KV heads, streaming
// each cache slot once with dot products; prefill chunks make items of (KV head, block of query
// rows) for a register-blocked path that computes a K-tile x Q-block score matrix and reuses
// each tile for the whole block. Both
// keep an online (flash-style) softmax in float32 over key tiles.
// Long items' key ranges are cut into fixed-width pieces (a function of the item alone, so
// results are batch-invariant) whose partial softmaxes are merged, in piece order, by whichever
// thread finishes the item's last piece. Items are handed out
// largest first from a shared counter, so uneven (causal) items still balance.
#include "attention.h"

#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "avx2_math.h"
#include "parallel.h"

namespace astrai {
namespace {

using simd::exp2_nonpositive;

// Scores are kept in base 2 (q pre-scaled by log2 e), so softmax weights are plain powers of two.
constexpr float kLog2e = 1.4426950408889634f;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kDirectMaxVectors = 8;  // items with at most this many query vectors take the dot-product path
constexpr int kDirectTile = 32;       // keys per tile on the dot-product path
constexpr int kBlockTile = 64;        // keys per tile on the blocked path
constexpr int kBlockVectors = 96;     // query vectors (rows x heads of a group) per blocked item
constexpr int kPieceKeys = 128;       // keys per piece of a long item (a multiple of both tiles)
constexpr int64_t kSerialCost = 6 * 1024;  // below this (a ~190-token SmolLM2 decode), forking costs more than it saves

enum class KvType { F32, F16, BF16 };

// Everything an item needs to find its queries, keys and outputs.
struct Problem {
  const float* q;
  int64_t q_row, q_head;  // strides (elements)
  float* out;
  int64_t out_row, out_head;
  const uint8_t* k_base;
  const uint8_t* v_base;
  KvType kv_type;
  int64_t elem_bytes;
  int64_t kv_heads, group, head_dim, page_size;
  const int32_t* block_tables;
  int64_t max_pages;
  float scale;
};

struct Item {
  int32_t seq, kv_head;  // the first KV head
  int32_t heads;         // KV heads covered: all of them on the dot-product path, one when blocked
  int32_t row0, rows;    // query rows [row0, row0 + rows) of the flat batch
  int32_t first_pos;     // last key index row0 may attend (its position); row i attends <= first_pos + i
  int32_t key0, key1;    // the keys of this piece: [key0, key1)
  int32_t group_id;      // -1: the item is whole; else the split item it belongs to
  int32_t piece;
  int64_t cost;
};

struct SplitGroup {
  int64_t offset;        // into the partials buffer
  int32_t pieces;
};

// Per-thread buffers, kept across calls (torch's pool threads are long-lived).
struct Scratch {
  std::vector<float> q, o, s, mx, l, alpha, kconv, vconv;
  std::vector<int32_t> limit;
  std::vector<const float*> krow, vrow;
};

// Not inlined: keeps the compiler from re-resolving the thread-local address inside hot loops.
__attribute__((noinline)) Scratch& thread_scratch() {
  static thread_local Scratch scratch;
  return scratch;
}

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---- key/value tiles ----

// Calls f(i, byte offset of key `key + i`'s row for the item's KV head) for i < n, walking the
// block table page by page (one division per page, not per key).
template <typename F>
inline void for_each_row(const Problem& p, const Item& it, int key, int n, F&& f) {
  const int64_t ps = p.page_size, row_bytes = p.head_dim * p.elem_bytes;
  const int64_t slot_bytes = p.kv_heads * row_bytes;
  const int32_t* table = p.block_tables + it.seq * p.max_pages;
  int64_t page = key / ps, within = key - page * ps;
  for (int i = 0; i < n;) {
    const int run = static_cast<int>(std::min<int64_t>(ps - within, n - i));
    int64_t offset = (static_cast<int64_t>(table[page]) * ps + within) * slot_bytes + it.kv_head * row_bytes;
    for (int r = 0; r < run; ++r, offset += slot_bytes) f(i + r, offset);
    i += run;
    ++page;
    within = 0;
  }
}

// float32 row pointers for keys [key, key + n) of one KV head: straight into the cache for
// float32, else converted into the thread's scratch.
void load_tile(const Problem& p, const Item& it, int key, int n, Scratch& s) {
  const int64_t D = p.head_dim;
  if (p.kv_type == KvType::F32) {
    for_each_row(p, it, key, n, [&](int i, int64_t offset) {
      s.krow[i] = reinterpret_cast<const float*>(p.k_base + offset);
      s.vrow[i] = reinterpret_cast<const float*>(p.v_base + offset);
    });
    return;
  }
  const bool half = p.kv_type == KvType::F16;
  for_each_row(p, it, key, n, [&](int i, int64_t offset) {
    const uint16_t* k16 = reinterpret_cast<const uint16_t*>(p.k_base + offset);
    const uint16_t* v16 = reinterpret_cast<const uint16_t*>(p.v_base + offset);
    float* kd = s.kconv.data() + i * D;
    float* vd = s.vconv.data() + i * D;
    if (half) {
      for (int64_t d = 0; d < D; d += 8) {
        _mm256_storeu_ps(kd + d, simd::load_f16(k16 + d));
        _mm256_storeu_ps(vd + d, simd::load_f16(v16 + d));
      }
    } else {
      for (int64_t d = 0; d < D; d += 8) {
        _mm256_storeu_ps(kd + d, simd::load_bf16(k16 + d));
        _mm256_storeu_ps(vd + d, simd::load_bf16(v16 + d));
      }
    }
    s.krow[i] = kd;
    s.vrow[i] = vd;
  });
}

// ---- micro-kernels ----

// How a row of the cache loads as float32, eight elements at a time.
struct F32Rows {
  using T = float;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
};
struct F16Rows {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) { return simd::load_f16(p); }
};
struct BF16Rows {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) { return simd::load_bf16(p); }
};

// o[r][d0 .. d0+W) += sum_n P(n, r) * v[n][d0 .. d0+W) for r < MR, P(n, r) = p[n * sn + r * sr].
template <int MR, int W, typename L>
inline void pv_kernel(const float* p, int64_t sn, int64_t sr, const typename L::T* const* vrow, int n_keys,
                      int64_t d0, float* o, int64_t ldo) {
  constexpr int C = W / 8;
  __m256 acc[MR][C];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_loadu_ps(o + r * ldo + d0 + 8 * c);
  for (int n = 0; n < n_keys; ++n) {
    __m256 v[C];
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) v[c] = L::load(vrow[n] + d0 + 8 * c);
    const float* pn = p + n * sn;
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 w = _mm256_broadcast_ss(pn + r * sr);
      #pragma GCC unroll 16
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(w, v[c], acc[r][c]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + r * ldo + d0 + 8 * c, acc[r][c]);
}

template <int MR, typename L>
void pv_rows_fixed(const float* p, int64_t sn, int64_t sr, const typename L::T* const* vrow, int n_keys, float* o,
                   int64_t D) {
  int64_t d = 0;
  if (MR <= 2)  // 4 accumulators per row still fit the 16 registers
    for (; d + 32 <= D; d += 32) pv_kernel<MR, 32, L>(p, sn, sr, vrow, n_keys, d, o, D);
  for (; d + 16 <= D; d += 16) pv_kernel<MR, 16, L>(p, sn, sr, vrow, n_keys, d, o, D);
  for (; d < D; d += 8) pv_kernel<MR, 8, L>(p, sn, sr, vrow, n_keys, d, o, D);
}

// O[m][:] += sum_n P(n, m) V[n][:] for m < M, in register tiles of up to six rows.
template <typename L>
void pv_rows(const float* p, int64_t sn, int64_t sr, const typename L::T* const* vrow, int n_keys, float* o, int M,
             int64_t D) {
  int m = 0;
  for (; m + 6 <= M; m += 6) pv_rows_fixed<6, L>(p + m * sr, sn, sr, vrow, n_keys, o + m * D, D);
  const float* pm = p + m * sr;
  float* om = o + m * D;
  switch (M - m) {
    case 5: pv_rows_fixed<5, L>(pm, sn, sr, vrow, n_keys, om, D); break;
    case 4: pv_rows_fixed<4, L>(pm, sn, sr, vrow, n_keys, om, D); break;
    case 3: pv_rows_fixed<3, L>(pm, sn, sr, vrow, n_keys, om, D); break;
    case 2: pv_rows_fixed<2, L>(pm, sn, sr, vrow, n_keys, om, D); break;
    case 1: pv_rows_fixed<1, L>(pm, sn, sr, vrow, n_keys, om, D); break;
    default: break;
  }
}

// s[r * lds + 0..16) = sum_d k[r][d] * qp[d][0..16) for r < NR: a key tile against one panel
// of 16 packed query vectors.
template <int NR>
inline void qk_kernel(const float* const* krow, const float* qp, int64_t D, float* s, int64_t lds) {
  __m256 acc[NR][2];
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m256 q0 = _mm256_loadu_ps(qp + d * 16);
    const __m256 q1 = _mm256_loadu_ps(qp + d * 16 + 8);
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m256 k = _mm256_broadcast_ss(krow[r] + d);
      acc[r][0] = _mm256_fmadd_ps(k, q0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(k, q1, acc[r][1]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r) {
    _mm256_storeu_ps(s + r * lds, acc[r][0]);
    _mm256_storeu_ps(s + r * lds + 8, acc[r][1]);
  }
}

void qk_panel(const float* const* krow, int n_keys, const float* qp, int64_t D, float* s, int64_t lds) {
  int n = 0;
  for (; n + 6 <= n_keys; n += 6) qk_kernel<6>(krow + n, qp, D, s + n * lds, lds);
  switch (n_keys - n) {
    case 5: qk_kernel<5>(krow + n, qp, D, s + n * lds, lds); break;
    case 4: qk_kernel<4>(krow + n, qp, D, s + n * lds, lds); break;
    case 3: qk_kernel<3>(krow + n, qp, D, s + n * lds, lds); break;
    case 2: qk_kernel<2>(krow + n, qp, D, s + n * lds, lds); break;
    case 1: qk_kernel<1>(krow + n, qp, D, s + n * lds, lds); break;
    default: break;
  }
}

// s[m * kDirectTile + i] = q[m] . k[i] for m < MG, i < 4: each key chunk loaded (and converted)
// once for MG query vectors.
template <int MG, typename L>
inline void qk4_kernel(const float* q, int64_t D, const typename L::T* const* k, float* s) {
  __m256 acc[MG][4];
  #pragma GCC unroll 16
  for (int m = 0; m < MG; ++m)
    #pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) acc[m][i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; d += 8) {
    __m256 qv[MG];  // this chunk of every query vector, reused for the four keys
    #pragma GCC unroll 16
    for (int m = 0; m < MG; ++m) qv[m] = _mm256_loadu_ps(q + m * D + d);
    #pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      const __m256 kv = L::load(k[i] + d);
      #pragma GCC unroll 16
      for (int m = 0; m < MG; ++m) acc[m][i] = _mm256_fmadd_ps(kv, qv[m], acc[m][i]);
    }
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MG; ++m) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[m][0], acc[m][1]), _mm256_hadd_ps(acc[m][2], acc[m][3]));
    _mm_storeu_ps(s + m * kDirectTile, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}

// Prefetch the lines of one cache slot (every covered KV head of one key) into L1 or L2.
inline void prefetch_slot_l1(const uint8_t* slot, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) simd::prefetch_l1(slot + b);
}
inline void prefetch_slot_l2(const uint8_t* slot, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) simd::prefetch_l2(slot + b);
}

// Scores of every covered KV head for one tile, s[(h * M + m) * kDirectTile + n] = q[h][m] . k[n]
// (a short tail repeats the tile's last key; the caller masks those scores). Keys are the outer
// loop, so each K slot (all heads, contiguous) is read front to back, once; along the way it
// prefetches the same keys' V slots and the next tile's K slots, two sequential streams that
// the memory system serves far better than per-head passes over strided rows.
template <typename L>
void direct_scores(const float* q, int M, int heads, int64_t D, const uint8_t* const* kslot, int n_keys,
                   const uint8_t* const* vslot, const uint8_t* const* knext, int n_next, int64_t slot_bytes,
                   float* s) {
  using T = typename L::T;
  for (int n = 0; n < n_keys; n += 4) {
    for (int i = n; i < std::min(n + 4, n_keys); ++i) prefetch_slot_l1(vslot[i], slot_bytes);
    for (int i = n; i < std::min(n + 4, n_next); ++i) prefetch_slot_l2(knext[i], slot_bytes);
    const T* base[4];
    for (int i = 0; i < 4; ++i) base[i] = reinterpret_cast<const T*>(kslot[std::min(n + i, n_keys - 1)]);
    for (int h = 0; h < heads; ++h) {
      const T* k[4] = {base[0] + h * D, base[1] + h * D, base[2] + h * D, base[3] + h * D};
      const float* qh = q + static_cast<int64_t>(h) * M * D;
      float* sh = s + static_cast<int64_t>(h) * M * kDirectTile + n;
      int m = 0;
      for (; m + 3 <= M; m += 3) qk4_kernel<3, L>(qh + m * D, D, k, sh + m * kDirectTile);
      if (M - m == 2) qk4_kernel<2, L>(qh + m * D, D, k, sh + m * kDirectTile);
      if (M - m == 1) qk4_kernel<1, L>(qh + m * D, D, k, sh + m * kDirectTile);
    }
  }
}

// ---- the two item paths ----

// Accumulators of one item: unnormalised output o [M, D], running max mx and sum l [M].
struct Accum {
  float* o;
  float* mx;
  float* l;
};

void scale_rows(float* o, const float* alpha, int M, int64_t D) {
  for (int m = 0; m < M; ++m) {
    if (alpha[m] == 1.0f) continue;
    const __m256 a = _mm256_set1_ps(alpha[m]);
    float* om = o + m * D;
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(om + d, _mm256_mul_ps(a, _mm256_loadu_ps(om + d)));
  }
}

// Few query vectors (decode): one item covers every KV head of its rows, so each key's cache
// slot streams in once. Per tile: scores for all heads (keys outer), a softmax along the tile,
// then P V per head; K/V read (and converted) straight from the cache.
template <typename L>
void direct_item(const Problem& p, const Item& it, Scratch& s, Accum acc) {
  using T = typename L::T;
  const uint8_t* kslot[kDirectTile];  // the item's first head's row of each key of the tile
  const uint8_t* vslot[kDirectTile];
  const uint8_t* knext[kDirectTile];
  const T* vhead[kDirectTile];
  const int64_t D = p.head_dim, G = p.group;
  const int M = static_cast<int>(it.rows * G);  // query vectors per KV head
  const int total = M * it.heads;
  grow(s.q, static_cast<size_t>(total) * D);
  grow(s.s, static_cast<size_t>(total) * kDirectTile);
  grow(s.alpha, total);
  const __m256 sc = _mm256_set1_ps(p.scale * kLog2e);
  for (int m = 0; m < total; ++m) {
    const int h = m / M, mm = m % M;
    const float* src = p.q + (it.row0 + mm / G) * p.q_row + ((it.kv_head + h) * G + mm % G) * p.q_head;
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(s.q.data() + m * D + d, _mm256_mul_ps(sc, _mm256_loadu_ps(src + d)));
    acc.mx[m] = kNegInf;
    acc.l[m] = 0.0f;
  }
  std::fill(acc.o, acc.o + static_cast<int64_t>(total) * D, 0.0f);
  const int64_t slot_bytes = it.heads * D * static_cast<int64_t>(sizeof(T));
  auto rows_of = [&](int key, int n, const uint8_t** k, const uint8_t** v) {
    for_each_row(p, it, key, n, [&](int i, int64_t offset) {
      k[i] = p.k_base + offset;
      if (v) v[i] = p.v_base + offset;
    });
  };
  int n = std::min(kDirectTile, it.key1 - it.key0);
  rows_of(it.key0, n, kslot, vslot);
  for (int key = it.key0; key < it.key1;) {
    const int next_key = key + n;
    const int n_next = std::min(kDirectTile, it.key1 - next_key);
    rows_of(next_key, std::max(0, n_next), knext, nullptr);
    direct_scores<L>(s.q.data(), M, it.heads, D, kslot, n, vslot, knext, std::max(0, n_next), slot_bytes, s.s.data());
    const int padded = static_cast<int>(round_up(n, 8));
    for (int m = 0; m < total; ++m) {
      float* sm = s.s.data() + m * kDirectTile;
      const int last = it.first_pos + (m % M) / static_cast<int>(G);  // causal: keys <= last
      const int valid = std::clamp(last - key + 1, 0, n);
      std::fill(sm + valid, sm + padded, kNegInf);
      __m256 vmax = _mm256_set1_ps(kNegInf);
      for (int i = 0; i < padded; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sm + i));
      const float mnew = std::max(acc.mx[m], simd::hmax(vmax));
      if (mnew == kNegInf) {  // nothing to attend in this tile yet
        std::fill(sm, sm + padded, 0.0f);
        s.alpha[m] = 1.0f;
        continue;
      }
      const __m256 mv = _mm256_set1_ps(mnew);
      __m256 sum = _mm256_setzero_ps();
      for (int i = 0; i < padded; i += 8) {
        const __m256 e = exp2_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sm + i), mv));
        _mm256_storeu_ps(sm + i, e);
        sum = _mm256_add_ps(sum, e);
      }
      const float a = std::exp2(acc.mx[m] - mnew);
      acc.l[m] = acc.l[m] * a + simd::hsum(sum);
      acc.mx[m] = mnew;
      s.alpha[m] = a;
    }
    scale_rows(acc.o, s.alpha.data(), total, D);
    for (int h = 0; h < it.heads; ++h) {
      for (int i = 0; i < n; ++i) vhead[i] = reinterpret_cast<const T*>(vslot[i]) + h * D;
      pv_rows<L>(s.s.data() + static_cast<int64_t>(h) * M * kDirectTile, 1, kDirectTile, vhead, n,
                 acc.o + static_cast<int64_t>(h) * M * D, M, D);
    }
    key = next_key;
    n = std::max(0, n_next);
    rows_of(key, n, kslot, vslot);
  }
}

// Many query vectors (prefill): Q packed once into 16-wide panels; per key tile, scores
// S[n][m] = K Q^T by register blocks, a softmax vectorised over query vectors, then O += P^T V.
void blocked_item(const Problem& p, const Item& it, Scratch& s, Accum acc) {
  const int64_t D = p.head_dim, G = p.group;
  const int M = static_cast<int>(it.rows * G);
  const int Mp = static_cast<int>(round_up(M, 16));
  grow(s.q, static_cast<size_t>(Mp) * D);
  grow(s.s, static_cast<size_t>(kBlockTile) * Mp);
  grow(s.alpha, Mp);
  grow(s.limit, Mp);
  float* qp = s.q.data();  // panel-major: qp[(m / 16) * D * 16 + d * 16 + m % 16]
  for (int m = 0; m < Mp; ++m) {
    float* dst = qp + (m / 16) * D * 16 + m % 16;
    if (m < M) {
      const float* src = p.q + (it.row0 + m / G) * p.q_row + (it.kv_head * G + m % G) * p.q_head;
      for (int64_t d = 0; d < D; ++d) dst[d * 16] = src[d] * (p.scale * kLog2e);
      s.limit[m] = it.first_pos + m / static_cast<int>(G);
    } else {
      for (int64_t d = 0; d < D; ++d) dst[d * 16] = 0.0f;
      s.limit[m] = std::numeric_limits<int32_t>::max();  // padding vectors: no mask, never written out
    }
  }
  std::fill(acc.o, acc.o + static_cast<int64_t>(M) * D, 0.0f);
  std::fill(acc.mx, acc.mx + Mp, kNegInf);
  std::fill(acc.l, acc.l + Mp, 0.0f);
  float* S = s.s.data();
  const int first_limit = it.first_pos;  // the smallest limit: keys up to here are visible to all
  for (int key = it.key0; key < it.key1; key += kBlockTile) {
    const int n = std::min(kBlockTile, it.key1 - key);
    load_tile(p, it, key, n, s);
    for (int panel = 0; panel < Mp / 16; ++panel)
      qk_panel(s.krow.data(), n, qp + panel * D * 16, D, S + panel * 16, Mp);
    for (int i = std::max(0, first_limit + 1 - key); i < n; ++i) {  // causal mask on the tile's tail
      const __m256i j = _mm256_set1_epi32(key + i);
      float* row = S + i * Mp;
      for (int m = 0; m < Mp; m += 8) {
        const __m256i lim = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.limit.data() + m));
        const __m256 hidden = _mm256_castsi256_ps(_mm256_cmpgt_epi32(j, lim));
        _mm256_storeu_ps(row + m, _mm256_blendv_ps(_mm256_loadu_ps(row + m), _mm256_set1_ps(kNegInf), hidden));
      }
    }
    for (int m = 0; m < Mp; m += 8) {
      __m256 vmax = _mm256_set1_ps(kNegInf);
      for (int i = 0; i < n; ++i) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(S + i * Mp + m));
      const __m256 old = _mm256_loadu_ps(acc.mx + m);
      const __m256 mnew = _mm256_max_ps(old, vmax);
      // a vector with nothing visible yet keeps max -inf; subtract 0 there so exp gives 0, not NaN
      const __m256 safe = _mm256_blendv_ps(mnew, _mm256_setzero_ps(), _mm256_cmp_ps(mnew, _mm256_set1_ps(kNegInf), _CMP_EQ_OQ));
      __m256 sum = _mm256_setzero_ps();
      for (int i = 0; i < n; ++i) {
        const __m256 e = exp2_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(S + i * Mp + m), safe));
        _mm256_storeu_ps(S + i * Mp + m, e);
        sum = _mm256_add_ps(sum, e);
      }
      const __m256 alpha = exp2_nonpositive(_mm256_sub_ps(old, safe));
      _mm256_storeu_ps(acc.l + m, _mm256_fmadd_ps(_mm256_loadu_ps(acc.l + m), alpha, sum));
      _mm256_storeu_ps(acc.mx + m, mnew);
      _mm256_storeu_ps(s.alpha.data() + m, alpha);
    }
    if (key != it.key0) scale_rows(acc.o, s.alpha.data(), M, D);  // first tile: o is zero
    pv_rows<F32Rows>(S, Mp, 1, s.vrow.data(), n, acc.o, M, D);
  }
}

// Query vectors of an item: rows x query heads of each covered KV head.
int64_t item_vectors(const Problem& p, const Item& it) { return static_cast<int64_t>(it.rows) * p.group * it.heads; }

void run_item(const Problem& p, const Item& it, Scratch& s, Accum acc) {
  const int64_t M = it.rows * p.group;  // per KV head
  grow(s.krow, kBlockTile);
  grow(s.vrow, kBlockTile);
  if (p.kv_type != KvType::F32) {
    grow(s.kconv, kBlockTile * p.head_dim);
    grow(s.vconv, kBlockTile * p.head_dim);
  }
  if (M <= kDirectMaxVectors) {
    switch (p.kv_type) {
      case KvType::F32: direct_item<F32Rows>(p, it, s, acc); break;
      case KvType::F16: direct_item<F16Rows>(p, it, s, acc); break;
      case KvType::BF16: direct_item<BF16Rows>(p, it, s, acc); break;
    }
  } else
    blocked_item(p, it, s, acc);
}

// Output vector m of an item: KV head kv_head + m / M (M vectors per head), then within it row
// row0 + (m % M) / G and query head (KV head) * G + m % G.
float* out_vector(const Problem& p, const Item& it, int64_t m) {
  const int64_t per_head = static_cast<int64_t>(it.rows) * p.group;
  const int64_t h = it.kv_head + m / per_head, mm = m % per_head;
  return p.out + (it.row0 + mm / p.group) * p.out_row + (h * p.group + mm % p.group) * p.out_head;
}

void write_normalised(const Problem& p, const Item& it, const Accum& acc) {
  const int64_t D = p.head_dim, M = item_vectors(p, it);
  for (int64_t m = 0; m < M; ++m) {
    const __m256 inv = _mm256_set1_ps(1.0f / acc.l[m]);
    float* dst = out_vector(p, it, m);
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(inv, _mm256_loadu_ps(acc.o + m * D + d)));
  }
}

// Partial results of piece k of a split item: o [M, D], then mx [Mp], then l [Mp].
int64_t piece_floats(int64_t M, int64_t D) { return M * D + 2 * round_up(M, 16); }

Accum piece_accum(float* base, int64_t M, int64_t D) {
  return Accum{base, base + M * D, base + M * D + round_up(M, 16)};
}

void merge_pieces(const Problem& p, const Item& it, float* base, int pieces) {
  const int64_t D = p.head_dim, M = item_vectors(p, it), stride = piece_floats(M, D);
  for (int64_t m = 0; m < M; ++m) {
    float top = kNegInf;
    for (int k = 0; k < pieces; ++k) top = std::max(top, piece_accum(base + k * stride, M, D).mx[m]);
    float total = 0.0f;
    __m256 sum[16];  // D <= 128 handled in registers; larger D loops below
    float* dst = out_vector(p, it, m);
    for (int64_t d0 = 0; d0 < D; d0 += 128) {
      const int64_t width = std::min<int64_t>(128, D - d0);
      for (int64_t c = 0; c < width / 8; ++c) sum[c] = _mm256_setzero_ps();
      total = 0.0f;
      for (int k = 0; k < pieces; ++k) {
        const Accum a = piece_accum(base + k * stride, M, D);
        if (a.mx[m] == kNegInf) continue;  // this piece saw no visible key for the vector
        const float w = std::exp2(a.mx[m] - top);
        total += w * a.l[m];
        const __m256 wv = _mm256_set1_ps(w);
        for (int64_t c = 0; c < width / 8; ++c)
          sum[c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a.o + m * D + d0 + 8 * c), sum[c]);
      }
      const __m256 inv = _mm256_set1_ps(1.0f / total);
      for (int64_t c = 0; c < width / 8; ++c) _mm256_storeu_ps(dst + d0 + 8 * c, _mm256_mul_ps(inv, sum[c]));
    }
  }
}

KvType kv_type_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return KvType::F32;
    case at::kHalf: return KvType::F16;
    case at::kBFloat16: return KvType::BF16;
    default: TORCH_CHECK(false, "paged_attention: KV cache dtype must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

void check_index_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimension(s), got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

}  // namespace

void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& block_tables, const at::Tensor& context_lens,
                     const at::Tensor& query_start_loc, double scale, const at::Tensor& out) {
  TORCH_CHECK(q.device().is_cpu() && out.device().is_cpu(), "paged_attention: q and out must be CPU tensors");
  TORCH_CHECK(q.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat,
              "paged_attention: q and out must be float32, got ", q.scalar_type(), " and ", out.scalar_type());
  TORCH_CHECK(q.dim() == 3, "paged_attention: q must be [T, heads, head_dim], got shape ", q.sizes());
  TORCH_CHECK(out.sizes() == q.sizes(), "paged_attention: out shape ", out.sizes(), " != q shape ", q.sizes());
  TORCH_CHECK(q.stride(2) == 1 && out.stride(2) == 1, "paged_attention: q and out need a contiguous last dimension");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(),
              "paged_attention: k_cache and v_cache must both be [num_pages, page_size, kv_heads, head_dim], got ",
              k_cache.sizes(), " and ", v_cache.sizes());
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type(), "paged_attention: k_cache and v_cache dtypes differ");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "paged_attention: the KV caches must be contiguous");
  TORCH_CHECK(k_cache.device().is_cpu() && v_cache.device().is_cpu(), "paged_attention: the KV caches must be CPU tensors");
  check_index_tensor(block_tables, "block_tables", at::kInt, 2);
  check_index_tensor(context_lens, "context_lens", at::kInt, 1);
  check_index_tensor(query_start_loc, "query_start_loc", at::kInt, 1);

  const int64_t T = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t num_pages = k_cache.size(0), page_size = k_cache.size(1), KVH = k_cache.size(2);
  const int64_t B = context_lens.size(0), max_pages = block_tables.size(1);
  TORCH_CHECK(k_cache.size(3) == D, "paged_attention: cache head_dim ", k_cache.size(3), " != q head_dim ", D);
  TORCH_CHECK(D % 8 == 0 && D > 0, "paged_attention: head_dim must be a positive multiple of 8, got ", D);
  TORCH_CHECK(KVH > 0 && H % KVH == 0, "paged_attention: ", H, " query heads are not a multiple of ", KVH, " KV heads");
  TORCH_CHECK(block_tables.size(0) == B, "paged_attention: block_tables has ", block_tables.size(0),
              " rows for ", B, " sequences");
  TORCH_CHECK(query_start_loc.size(0) == B + 1, "paged_attention: query_start_loc must have B+1 = ", B + 1,
              " entries, got ", query_start_loc.size(0));

  const int32_t* qsl = query_start_loc.data_ptr<int32_t>();
  const int32_t* ctx = context_lens.data_ptr<int32_t>();
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  TORCH_CHECK(qsl[0] == 0 && qsl[B] == T, "paged_attention: query_start_loc must run from 0 to T = ", T,
              ", got ", qsl[0], " .. ", qsl[B]);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q_len = qsl[b + 1] - qsl[b];
    TORCH_CHECK(q_len >= 0, "paged_attention: query_start_loc decreases at sequence ", b);
    TORCH_CHECK(ctx[b] >= q_len, "paged_attention: sequence ", b, " has context ", ctx[b], " < its ", q_len, " queries");
    const int64_t pages = (ctx[b] + page_size - 1) / page_size;
    TORCH_CHECK(pages <= max_pages, "paged_attention: sequence ", b, " needs ", pages, " pages, block_tables has ", max_pages);
    if (q_len == 0) continue;
    for (int64_t i = 0; i < pages; ++i) {
      const int32_t page = tables[b * max_pages + i];
      TORCH_CHECK(page >= 0 && page < num_pages, "paged_attention: sequence ", b, " names page ", page,
                  " outside the cache's ", num_pages, " pages");
    }
  }
  if (T == 0) return;

  Problem p;
  p.q = q.data_ptr<float>();
  p.q_row = q.stride(0);
  p.q_head = q.stride(1);
  p.out = out.data_ptr<float>();
  p.out_row = out.stride(0);
  p.out_head = out.stride(1);
  p.k_base = static_cast<const uint8_t*>(k_cache.data_ptr());
  p.v_base = static_cast<const uint8_t*>(v_cache.data_ptr());
  p.kv_type = kv_type_of(k_cache);
  p.elem_bytes = k_cache.element_size();
  p.kv_heads = KVH;
  p.group = H / KVH;
  p.head_dim = D;
  p.page_size = page_size;
  p.block_tables = tables;
  p.max_pages = max_pages;
  p.scale = static_cast<float>(scale);

  // Items: a decode-sized sequence whole, or (KV head, block of query rows) of a longer chunk;
  // key range [0, last visible key].
  const int64_t G = p.group;
  const int64_t block_rows = std::max<int64_t>(1, kBlockVectors / G);
  const int64_t per_key = 4 + 2 * D * p.elem_bytes / 64;  // rough cost of one key besides its math
  std::vector<Item> items;
  int64_t total_cost = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t q_len = qsl[b + 1] - qsl[b];
    if (q_len == 0) continue;
    const int32_t prefix = ctx[b] - q_len;
    if (q_len * G <= kDirectMaxVectors) {  // decode-sized: one item streams every KV head
      Item it{static_cast<int32_t>(b), 0, static_cast<int32_t>(KVH), qsl[b], q_len, prefix, 0, ctx[b], -1, 0, 0};
      it.cost = static_cast<int64_t>(it.key1) * KVH * (q_len * G + per_key);
      total_cost += it.cost;
      items.push_back(it);
      continue;
    }
    for (int32_t r = 0; r < q_len; r += static_cast<int32_t>(block_rows)) {
      const int32_t rows = static_cast<int32_t>(std::min<int64_t>(block_rows, q_len - r));
      for (int32_t h = 0; h < KVH; ++h) {
        Item it{static_cast<int32_t>(b), h, 1, qsl[b] + r, rows, prefix + r, 0, prefix + r + rows, -1, 0, 0};
        it.cost = static_cast<int64_t>(it.key1) * (rows * G + per_key);
        total_cost += it.cost;
        items.push_back(it);
      }
    }
  }

  const int threads = total_cost < kSerialCost ? 1 : num_threads();
  // Long items are cut into key pieces of a fixed width whose partial softmaxes are merged in
  // piece order. The cut depends only on the item's own keys, never on the batch or the thread
  // count, so a sequence's result is the same alone, batched, or on one thread (batch
  // invariance); on several threads the pieces also keep a short batch's threads busy.
  std::vector<SplitGroup> groups;
  int64_t partial_floats = 0;
  {
    std::vector<Item> split;
    split.reserve(items.size());
    for (const Item& it : items) {
      const int64_t keys = it.key1;
      const int64_t pieces = (keys + kPieceKeys - 1) / kPieceKeys;
      if (pieces <= 1) {
        split.push_back(it);
        continue;
      }
      const int32_t id = static_cast<int32_t>(groups.size());
      groups.push_back(SplitGroup{partial_floats, static_cast<int32_t>(pieces)});
      partial_floats += pieces * piece_floats(item_vectors(p, it), D);
      for (int64_t k = 0; k < pieces; ++k) {
        Item piece = it;
        piece.key0 = static_cast<int32_t>(k * kPieceKeys);
        piece.key1 = static_cast<int32_t>(std::min<int64_t>(keys, (k + 1) * kPieceKeys));
        piece.group_id = id;
        piece.piece = static_cast<int32_t>(k);
        piece.cost = it.cost * (piece.key1 - piece.key0) / keys;
        split.push_back(piece);
      }
    }
    items.swap(split);
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  }

  std::unique_ptr<float[]> partials(partial_floats ? new float[partial_floats] : nullptr);
  std::unique_ptr<std::atomic<int32_t>[]> remaining(groups.empty() ? nullptr : new std::atomic<int32_t>[groups.size()]);
  for (size_t g = 0; g < groups.size(); ++g) remaining[g].store(groups[g].pieces, std::memory_order_relaxed);

  std::atomic<int64_t> next{0};
  const int64_t count = static_cast<int64_t>(items.size());
  auto worker = [&]() {
    Scratch& s = thread_scratch();
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) break;
      const Item& it = items[i];
      const int64_t M = item_vectors(p, it);
      if (it.group_id < 0) {
        grow(s.o, M * D);
        grow(s.mx, round_up(M, 16));
        grow(s.l, round_up(M, 16));
        Accum acc{s.o.data(), s.mx.data(), s.l.data()};
        run_item(p, it, s, acc);
        write_normalised(p, it, acc);
        continue;
      }
      const SplitGroup& g = groups[it.group_id];
      float* base = partials.get() + g.offset;
      run_item(p, it, s, piece_accum(base + it.piece * piece_floats(M, D), M, D));
      if (remaining[it.group_id].fetch_sub(1, std::memory_order_acq_rel) == 1) merge_pieces(p, it, base, g.pieces);
    }
  };
  if (threads <= 1 || count <= 1) {
    worker();
  } else {
    parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(); });
  }
}

void kv_write(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
              const at::Tensor& slot_mapping) {
  TORCH_CHECK(k.device().is_cpu() && v.device().is_cpu(), "kv_write: k and v must be CPU tensors");
  TORCH_CHECK(k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat, "kv_write: k and v must be float32");
  TORCH_CHECK(k.dim() == 3 && v.sizes() == k.sizes(), "kv_write: k and v must both be [T, kv_heads, head_dim], got ",
              k.sizes(), " and ", v.sizes());
  TORCH_CHECK(k.stride(2) == 1 && v.stride(2) == 1, "kv_write: k and v need a contiguous last dimension");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "kv_write: k_cache and v_cache must both be ",
              "[num_pages, page_size, kv_heads, head_dim], got ", k_cache.sizes(), " and ", v_cache.sizes());
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type(), "kv_write: k_cache and v_cache dtypes differ");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "kv_write: the KV caches must be contiguous");
  TORCH_CHECK(k_cache.device().is_cpu() && v_cache.device().is_cpu(), "kv_write: the KV caches must be CPU tensors");
  const KvType type = kv_type_of(k_cache);
  const int64_t T = k.size(0), KVH = k.size(1), D = k.size(2);
  TORCH_CHECK(k_cache.size(2) == KVH && k_cache.size(3) == D, "kv_write: rows [", KVH, ", ", D,
              "] do not fit cache rows [", k_cache.size(2), ", ", k_cache.size(3), "]");
  check_index_tensor(slot_mapping, "slot_mapping", at::kLong, 1);
  TORCH_CHECK(slot_mapping.size(0) == T, "kv_write: slot_mapping has ", slot_mapping.size(0), " entries for ", T, " rows");
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const int64_t num_slots = k_cache.size(0) * k_cache.size(1);
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(slots[t] >= -1 && slots[t] < num_slots, "kv_write: slot ", slots[t], " of row ", t,
                " is outside the cache's ", num_slots, " slots (-1 = skip)");

  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), vs0 = v.stride(0), vs1 = v.stride(1);
  uint8_t* kc = static_cast<uint8_t*>(k_cache.data_ptr());
  uint8_t* vc = static_cast<uint8_t*>(v_cache.data_ptr());
  const int64_t es = k_cache.element_size();

  auto write_row = [&](const float* src, uint8_t* dst_bytes) {
    if (type == KvType::F32) {
      std::memcpy(dst_bytes, src, D * sizeof(float));
      return;
    }
    uint16_t* dst = reinterpret_cast<uint16_t*>(dst_bytes);
    int64_t d = 0;
    if (type == KvType::F16) {
      for (; d + 8 <= D; d += 8) simd::store_f16(dst + d, _mm256_loadu_ps(src + d));
      for (; d < D; ++d) dst[d] = c10::Half(src[d]).x;
    } else {
      for (; d + 8 <= D; d += 8) simd::store_bf16(dst + d, _mm256_loadu_ps(src + d));
      for (; d < D; ++d) dst[d] = simd::float_to_bf16(src[d]);
    }
  };
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, KVH * D));  // a decode batch stays on one thread
  parallel_for(0, T, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (slots[t] < 0) continue;
      for (int64_t h = 0; h < KVH; ++h) {
        const int64_t offset = (slots[t] * KVH + h) * D * es;
        write_row(kp + t * ks0 + h * ks1, kc + offset);
        write_row(vp + t * vs0 + h * vs1, vc + offset);
      }
    }
  });
}

TORCH_LIBRARY_FRAGMENT(astrai, m) {
  m.def(
      "paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
      "Tensor query_start_loc, float scale, Tensor(a!) out) -> ()");
  m.def("kv_write(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
}

TORCH_LIBRARY_IMPL(astrai, CPU, m) {
  m.impl("paged_attention", &paged_attention);
  m.impl("kv_write", &kv_write);
}

}  // namespace astrai
