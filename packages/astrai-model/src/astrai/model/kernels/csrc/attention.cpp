// Paged attention that reads K/V pages in place, and the cache write. The per-vector arithmetic
// is attention.h's canonical algorithm; this file only decides which vectors share the work.
//
// One call covers every sequence of a ragged batch, cut into items; all query heads of a GQA
// group ride in the same item, so each K/V row is read once for the whole group. A decode-sized
// sequence (few query vectors per KV head) is one item over all its KV heads; a chunk makes items
// of (KV head, block of query rows). An item whose keys span several 128-key pieces is split into
// one work unit per piece; the pieces' partial softmaxes are merged, in piece order, by whichever
// thread finishes the last one. Units are handed out largest first from a shared counter; each
// thread claims its next unit before running the current one (while enough remain for the
// others), and K/V rows are prefetched one tile ahead from inside the score loop, a few keys per
// step, the last tile fetching the next unit's first.
// Per tile of 32 keys an item computes its vectors' scores, runs each vector's softmax step
// (lane sums by key offset mod 8: the canonical order), then P V in register blocks of vectors,
// each vector's output scaled by its softmax step as its block loads it: a vector whose tile is
// only partly visible (the causal diagonal, a window's edge) takes its own exact key range.
// In avx512 builds a chunk item transposes each tile's keys into columns, so that one register
// holds one score lane sum for 16 keys and no score needs a horizontal step.
#include "attention.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "parallel.h"
#include "simd.h"

namespace astrai {
namespace {

using simd::exp2_nonpositive;

constexpr float kLog2e = 1.4426950408889634f;  // scores in base 2: softmax weights are powers of two
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kTile = 32;             // keys per tile, at absolute multiples of 32
constexpr int kPieceKeys = 128;       // keys per piece, at absolute multiples of 128
constexpr int kDirectMaxVectors = 8;  // at most this many vectors per KV head: one item over all heads
constexpr int kBlockVectors = 96;     // query vectors (rows x heads of a group) per chunk item
constexpr int64_t kSerialCost = 6 * 1024;  // below this much work, forking costs more than it saves

enum class KvType { F32, F16, BF16 };

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
  float c;         // float(scale) * log2(e)
  int32_t window;  // 0: none
};

struct Item {
  int32_t seq, kv_head;  // the first KV head
  int32_t heads;         // KV heads covered: all of them for decode-sized work, else one
  int32_t row0, rows;    // query rows [row0, row0 + rows) of the flat batch
  int32_t first_pos;     // position of row0; row i has position first_pos + i
  int32_t key0, key1;    // the keys of this unit: [key0, key1)
  int32_t group_id;      // -1: the item is whole; else the split item it belongs to
  int32_t piece;
  int64_t cost;
};

struct SplitGroup {
  int64_t offset;  // into the partials buffer
  int32_t pieces;
};

// Accumulators of one unit: unnormalised output o [M, D], running max mx and sum l [Mp].
struct Accum {
  float* o;
  float* mx;
  float* l;
};

// Per-thread buffers, kept across calls (the worker team's threads are long-lived).
struct Scratch {
  std::vector<float> q, s, alpha, kconv, vconv, kcols, zero;
  std::vector<int32_t> begin, end;
  std::vector<const float*> kf, vf;
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

int32_t lowest_key(const Problem& p, int32_t pos) { return p.window > 0 ? std::max(0, pos - p.window + 1) : 0; }

// Query vectors of an item: rows x query heads of each covered KV head; vector m belongs to KV
// head kv_head + m / (rows * group), row (m % (rows * group)) / group.
int64_t item_vectors(const Problem& p, const Item& it) { return static_cast<int64_t>(it.rows) * p.group * it.heads; }

float* out_vector(const Problem& p, const Item& it, int64_t m) {
  const int64_t per_head = static_cast<int64_t>(it.rows) * p.group;
  const int64_t h = it.kv_head + m / per_head, mm = m % per_head;
  return p.out + (it.row0 + mm / p.group) * p.out_row + (h * p.group + mm % p.group) * p.out_head;
}

// Rows of keys [key, key + n) of KV head `head` in the K and V caches, walking the block table
// page by page.
template <typename T>
void tile_rows(const Problem& p, int32_t seq, int64_t head, int key, int n, const T** k, const T** v) {
  const int64_t ps = p.page_size, row_bytes = p.head_dim * p.elem_bytes;
  const int64_t slot_bytes = p.kv_heads * row_bytes;
  const int32_t* table = p.block_tables + seq * p.max_pages;
  int64_t page = key / ps, within = key - page * ps;
  for (int i = 0; i < n;) {
    const int run = static_cast<int>(std::min<int64_t>(ps - within, n - i));
    int64_t offset = (static_cast<int64_t>(table[page]) * ps + within) * slot_bytes + head * row_bytes;
    for (int r = 0; r < run; ++r, offset += slot_bytes) {
      k[i + r] = reinterpret_cast<const T*>(p.k_base + offset);
      v[i + r] = reinterpret_cast<const T*>(p.v_base + offset);
    }
    i += run;
    ++page;
    within = 0;
  }
}

// ---- micro-kernels ----

// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) of one vector's eight lanes: the canonical
// tree of every dot product and tile sum (hadd pairs neighbours, then the 128-bit halves add).
inline float tree8(__m256 v) {
  const __m256 h = _mm256_hadd_ps(v, v);  // [l0+l1, l2+l3, ., ., l4+l5, l6+l7, ., .]
  const __m256 q = _mm256_hadd_ps(h, h);  // [(l0+l1)+(l2+l3), ., ., ., (l4+l5)+(l6+l7), ...]
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
}

// s[i * ld] = tree8(a[i]) for the four keys' lane sums a[i] of one vector.
inline void store_scores(const __m256 (&a)[4], float* s, int64_t ld) {
  // hadd(hadd(a0, a1), hadd(a2, a3)), then the two 128-bit halves: key i gets tree8(ai).
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m128 r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  if (ld == 1) {
    _mm_storeu_ps(s, r);
  } else {
    alignas(16) float v[4];
    _mm_store_ps(v, r);
    for (int i = 0; i < 4; ++i) s[i * ld] = v[i];
  }
}

// s[i * ld + m] = dot(q[m], k[i]) for m < MG, i < 4, with the canonical lane sums and tree.
template <int MG, typename L>
inline void score_block(const float* q, int64_t D, const typename L::T* const* k, float* s, int64_t ld, int64_t lm) {
  __m256 acc[MG][4];
  #pragma GCC unroll 16
  for (int m = 0; m < MG; ++m)
    #pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) acc[m][i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; d += 8) {
    __m256 qv[MG];
    #pragma GCC unroll 16
    for (int m = 0; m < MG; ++m) qv[m] = _mm256_loadu_ps(q + m * D + d);
    #pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256 kv = L::load(k[i] + d);
      #pragma GCC unroll 16
      for (int m = 0; m < MG; ++m) acc[m][i] = _mm256_fmadd_ps(kv, qv[m], acc[m][i]);
    }
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MG; ++m) store_scores(acc[m], s + m * lm, ld);
}

#if defined(ASTRAI_ISA_AVX512)
// ---- 16-lane kernels (avx512 builds) ----
// They run the canonical float operations of each output element unchanged, so every variant's
// results are bit-identical: an output column's P V chain does not depend on the vector width, and
// two query vectors share a score register, one per 256-bit half, each half then reduced by the
// same tree as an 8-lane vector.

// A cache row as 16 float32 lanes (`load`), or its 8 elements at p in both 256-bit halves (`both`).
template <typename L>
struct Wide;
template <>
struct Wide<F32Rows> {
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 both(const float* p) { return _mm512_broadcast_f32x8(_mm256_loadu_ps(p)); }
};
template <>
struct Wide<F16Rows> {
  static __m512 load(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static __m512 both(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};
template <>
struct Wide<BF16Rows> {
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint16_t* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static __m512 both(const uint16_t* p) {
    return widen(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

// 16-lane float vectors for pv_kernel (Vec8's twin).
template <typename L>
struct Vec16 {
  using T = typename L::T;
  using V = __m512;
  static constexpr int kLanes = 16;
  static V row(const T* p) { return Wide<L>::load(p); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V splat(const float* p) { return _mm512_set1_ps(*p); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};

// score_block for 2 * MP query vectors: pair j holds vectors 2j (low half) and 2j + 1 (high half)
// against the same key in both halves.
template <int MP, typename L>
inline void score_pairs(const float* q, int64_t D, const typename L::T* const* k, float* s, int64_t ld, int64_t lm) {
  __m512 acc[MP][4];
  #pragma GCC unroll 16
  for (int j = 0; j < MP; ++j)
    #pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) acc[j][i] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 8) {
    __m512 qv[MP];
    #pragma GCC unroll 16
    for (int j = 0; j < MP; ++j)
      qv[j] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(q + 2 * j * D + d)),
                                 _mm256_loadu_ps(q + (2 * j + 1) * D + d), 1);
    #pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m512 kv = Wide<L>::both(k[i] + d);
      #pragma GCC unroll 16
      for (int j = 0; j < MP; ++j) acc[j][i] = _mm512_fmadd_ps(kv, qv[j], acc[j][i]);
    }
  }
  #pragma GCC unroll 16
  for (int j = 0; j < MP; ++j)
    #pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m256 a[4];
      #pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) a[i] = half == 0 ? _mm512_castps512_ps256(acc[j][i]) : _mm512_extractf32x8_ps(acc[j][i], 1);
      store_scores(a, s + (2 * j + half) * lm, ld);
    }
}

// A tile's keys as columns, in two halves of 16 offsets: element d of the key at tile offset j
// is kt[(j / 16 * D + d) * 16 + j % 16], for every offset of the 8-offset groups that [j0, j0 + nk)
// touches (an offset without a key reads the row `zero`). 8 x 8 blocks through registers.
template <typename L>
void key_columns(const typename L::T* const* krow, int j0, int nk, int64_t D, const typename L::T* zero, float* kt) {
  for (int g = j0 / 8 * 8; g < j0 + nk; g += 8) {
    const typename L::T* rows[8];
    for (int k = 0; k < 8; ++k) rows[k] = g + k >= j0 && g + k < j0 + nk ? krow[g + k - j0] : zero;
    float* base = kt + (g / 16) * D * 16 + g % 16;
    for (int64_t d = 0; d < D; d += 8) {
      __m256 r[8], t[8], u[8];
      #pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) r[k] = L::load(rows[k] + d);
      #pragma GCC unroll 4
      for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
      }
      #pragma GCC unroll 2
      for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
      }
      float* dst = base + d * 16;
      #pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * 16, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * 16, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
      }
    }
  }
}

// s[r * lm + j] = dot(q[r], key j) for R vectors (q, stride D) and the 16 keys of one half of
// key_columns' kt. Accumulator i of a vector holds, per key, the canonical lane sum i (d = i
// mod 8, FMAs in d order); the tree adds them as tree8 adds lanes, so scores are bit-identical to
// score_block's, one key per lane and no horizontal step.
template <int R>
inline void score_columns(const float* q, int64_t D, const float* kt, float* s, int64_t lm) {
  __m512 acc[R][8];
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 8)
    #pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      __m512 k = _mm512_loadu_ps(kt + (d + i) * 16);
      asm("" : "+v"(k));  // one load for all R vectors, not one memory operand each
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * D + d + i]), k, acc[r][i]);
    }
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512 lo = _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3]));
    const __m512 hi = _mm512_add_ps(_mm512_add_ps(acc[r][4], acc[r][5]), _mm512_add_ps(acc[r][6], acc[r][7]));
    _mm512_storeu_ps(s + r * lm, _mm512_add_ps(lo, hi));
  }
}

#endif

// One head's K and V rows of the next tile, pulled towards the caches a few keys at a time from
// inside this tile's score loop: spread over the work, the requests stay within what the core
// can keep in flight instead of stalling it in one burst.
struct NextRows {
  const char* k[kTile];
  const char* v[kTile];
  int n = 0;
  int64_t bytes = 0;  // of one row

  void fetch(int i0, int i1) const {
    for (int i = i0; i < std::min(i1, n); ++i)
      for (int64_t b = 0; b < bytes; b += 64) {
        simd::prefetch_l2(k[i] + b);
        simd::prefetch_l2(v[i] + b);
      }
  }
};

// Scores of M query vectors (q, stride D) against n keys: vector m's score of key i at
// s[i * ld + m * lm]. Keys go in fours; a short tail repeats the last key into up to 3 entries
// past n, which the caller's buffer holds and never reads. `next`: rows to prefetch alongside,
// as many keys of it per step as the step scores (none when next.n == 0).
template <typename L>
void scores(const float* q, int M, int64_t D, const typename L::T* const* k, int n, float* s, int64_t ld,
            int64_t lm, const NextRows& next) {
  for (int i = 0; i < n; i += 4) {
    next.fetch(i, i + 4);
    const typename L::T* k4[4];
    for (int j = 0; j < 4; ++j) k4[j] = k[std::min(i + j, n - 1)];
    float* si = s + static_cast<int64_t>(i) * ld;
    int m = 0;
#if defined(ASTRAI_ISA_AVX512)
    if (M >= 8) {  // chunks: pairs of vectors per register (decode's few vectors keep 8 lanes)
      for (; m + 8 <= M; m += 8) score_pairs<4, L>(q + m * D, D, k4, si + m * lm, ld, lm);
      switch ((M - m) / 2) {
        case 3: score_pairs<3, L>(q + m * D, D, k4, si + m * lm, ld, lm); m += 6; break;
        case 2: score_pairs<2, L>(q + m * D, D, k4, si + m * lm, ld, lm); m += 4; break;
        case 1: score_pairs<1, L>(q + m * D, D, k4, si + m * lm, ld, lm); m += 2; break;
        default: break;
      }
    }
#endif
    for (; m + 3 <= M; m += 3) score_block<3, L>(q + m * D, D, k4, si + m * lm, ld, lm);
    if (M - m == 2) score_block<2, L>(q + m * D, D, k4, si + m * lm, ld, lm);
    if (M - m == 1) score_block<1, L>(q + m * D, D, k4, si + m * lm, ld, lm);
  }
  next.fetch(static_cast<int>(round_up(n, 4)), kTile);
}

#if defined(ASTRAI_ISA_AVX512)
// Scores of M vectors against the offsets [j0, j1) of a tile held as columns (key_columns): vector
// m's score of offset j at s[m * lm + j]; the other offsets of a half that [j0, j1) touches score
// garbage the caller never reads. `next` is prefetched alongside, spread over the steps.
void scores_columns(const float* q, int M, int64_t D, const float* kt, int j0, int j1, float* s, int64_t lm,
                    const NextRows& next) {
  const int first = j0 / 16, halves = (j1 + 15) / 16 - first, blocks = (M + 2) / 3, steps = halves * blocks;
  int step = 0;
  for (int half = first; half < first + halves; ++half) {
    const float* k = kt + half * D * 16;
    for (int m = 0; m < M; m += 3, ++step) {
      next.fetch(kTile * step / steps, kTile * (step + 1) / steps);
      float* sm = s + m * lm + 16 * half;
      switch (std::min(3, M - m)) {
        case 3: score_columns<3>(q + m * D, D, k, sm, lm); break;
        case 2: score_columns<2>(q + m * D, D, k, sm, lm); break;
        default: score_columns<1>(q + m * D, D, k, sm, lm); break;
      }
    }
  }
}
#endif

// Heads [head, head + heads) of keys [key, key + n) (contiguous in each slot) as NextRows.
// Chunk items read one head, decode items every head of the slot.
NextRows rows_ahead(const Problem& p, int32_t seq, int64_t head, int64_t heads, int key, int n) {
  NextRows r;
  r.n = std::max(0, n);
  r.bytes = heads * p.head_dim * p.elem_bytes;
  if (r.n > 0) tile_rows<char>(p, seq, head, key, r.n, r.k, r.v);
  return r;
}

// Float vectors of one width for pv_kernel: a cache row's lanes (`row`), float32 loads and stores,
// a broadcast weight and the FMA. 8 lanes on every build; Vec16 on avx512 ones.
template <typename L>
struct Vec8 {
  using T = typename L::T;
  using V = __m256;
  static constexpr int kLanes = 8;
  static V row(const T* p) { return L::load(p); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V splat(const float* p) { return _mm256_broadcast_ss(p); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};

// o[r][d0 .. d0 + C * lanes) = o * alpha[r], then fma(P(n, r), v[n][d], o) for n in order, r < MR;
// P(n, r) = p[n * sn + r * sr]. Each output column's chain is the same at any vector width.
template <int MR, int C, typename W>
inline void pv_kernel(const float* p, int64_t sn, int64_t sr, const typename W::T* const* vrow, int n_keys,
                      const float* alpha, int64_t d0, float* o, int64_t ldo) {
  constexpr int N = W::kLanes;
  typename W::V acc[MR][C];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[r][c] = W::mul(W::splat(alpha + r), W::load(o + r * ldo + d0 + N * c));
  for (int n = 0; n < n_keys; ++n) {
    typename W::V v[C];
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) v[c] = W::row(vrow[n] + d0 + N * c);
    const float* pn = p + n * sn;
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const typename W::V w = W::splat(pn + r * sr);
      #pragma GCC unroll 16
      for (int c = 0; c < C; ++c) acc[r][c] = W::fma(w, v[c], acc[r][c]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int c = 0; c < C; ++c) W::store(o + r * ldo + d0 + N * c, acc[r][c]);
}

template <int MR, typename L>
void pv_fixed(const float* p, int64_t sn, int64_t sr, const typename L::T* const* vrow, int n_keys,
              const float* alpha, float* o, int64_t D) {
  int64_t d = 0;
#if defined(ASTRAI_ISA_AVX512)
  // up to 6 x 4 accumulators, 4 V vectors and a weight: within the 32 registers
  for (; d + 64 <= D; d += 64) pv_kernel<MR, 4, Vec16<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D);
  if (d + 32 <= D) pv_kernel<MR, 2, Vec16<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D), d += 32;
  if (d + 16 <= D) pv_kernel<MR, 1, Vec16<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D), d += 16;
#else
  if (MR <= 2)  // 4 accumulators per row still fit the 16 registers
    for (; d + 32 <= D; d += 32) pv_kernel<MR, 4, Vec8<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D);
  for (; d + 16 <= D; d += 16) pv_kernel<MR, 2, Vec8<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D);
#endif
  for (; d < D; d += 8) pv_kernel<MR, 1, Vec8<L>>(p, sn, sr, vrow, n_keys, alpha, d, o, D);
}

// O[m][:] = O[m][:] * alpha[m], then fma(P(n, m), V[n][:], O[m][:]) over n in order, for M
// consecutive vectors.
template <typename L>
void pv(const float* p, int64_t sn, int64_t sr, const typename L::T* const* vrow, int n_keys, const float* alpha,
        float* o, int M, int64_t D) {
  if (n_keys <= 0) return;
  int m = 0;
  for (; m + 6 <= M; m += 6) pv_fixed<6, L>(p + m * sr, sn, sr, vrow, n_keys, alpha + m, o + m * D, D);
  const float* pm = p + m * sr;
  const float* am = alpha + m;
  float* om = o + m * D;
  switch (M - m) {
    case 5: pv_fixed<5, L>(pm, sn, sr, vrow, n_keys, am, om, D); break;
    case 4: pv_fixed<4, L>(pm, sn, sr, vrow, n_keys, am, om, D); break;
    case 3: pv_fixed<3, L>(pm, sn, sr, vrow, n_keys, am, om, D); break;
    case 2: pv_fixed<2, L>(pm, sn, sr, vrow, n_keys, am, om, D); break;
    case 1: pv_fixed<1, L>(pm, sn, sr, vrow, n_keys, am, om, D); break;
    default: break;
  }
}

// ---- one work unit ----

// The keys of a tile: [k0, k1) with k0 - tile, k1 - tile in [0, kTile]; vector m sees
// [begin[m], end[m]) of the tile's offsets (empty: the tile leaves its state exactly as it was).
struct TileKeys {
  int tile, k0, k1;
};

// Each vector's visible offsets in the tile (vectors of every covered head repeat per head);
// the padding vectors [M, Mp) see none.
void visible(const Problem& p, const Item& it, const TileKeys& t, int Mp, Scratch& s) {
  int m = 0;
  for (int h = 0; h < it.heads; ++h)
    for (int r = 0; r < it.rows; ++r) {
      const int32_t pos = it.first_pos + r;
      const int32_t b = std::clamp(std::max(lowest_key(p, pos), t.k0) - t.tile, 0, kTile);
      const int32_t e = std::clamp(std::min(pos + 1, t.k1) - t.tile, 0, kTile);
      for (int64_t g = 0; g < p.group; ++g, ++m) {
        s.begin[m] = b;
        s.end[m] = e;
      }
    }
  for (; m < Mp; ++m) s.begin[m] = s.end[m] = 0;
}

// Vectors [0, M) of one head (scores p[m * sr + j * sn] at tile offset j, output scale alpha[m]):
// a blocked pass for runs that see the whole of [k0, k1), each other vector over its own visible
// keys. A vector that sees none is left as it is (its alpha is 1).
template <typename L>
void pv_tile(const TileKeys& t, const float* P, int64_t sn, int64_t sr, const typename L::T* const* vrow,
             const int32_t* begin, const int32_t* end, const float* alpha, float* o, int M, int64_t D) {
  const int j0 = t.k0 - t.tile, j1 = t.k1 - t.tile;
  for (int m = 0; m < M;) {
    if (begin[m] == j0 && end[m] == j1) {
      int run = m;
      while (run < M && begin[run] == j0 && end[run] == j1) ++run;
      pv<L>(P + j0 * sn + m * sr, sn, sr, vrow, j1 - j0, alpha + m, o + m * D, run - m, D);
      m = run;
      continue;
    }
    if (end[m] > begin[m]) pv<L>(P + begin[m] * sn + m * sr, sn, sr, vrow + (begin[m] - j0), end[m] - begin[m],
                                 alpha + m, o + m * D, 1, D);
    ++m;
  }
}

constexpr int kStride = kTile + 8;  // scores per vector (a four-key tail may spill 3 past the tile)

// The online-softmax step of one vector for one tile: its scores sm[j] at tile offsets j (only
// [b, e) visible, b < e) become the weights (0 where hidden); returns what o must be scaled by.
inline float softmax_vector(float* sm, int b, int e, float& mx, float& l) {
  const __m256 neg_inf = _mm256_set1_ps(kNegInf);
  __m256 v[4];
  __m256 top = neg_inf;
  if (b == 0 && e == kTile) {  // the whole tile visible: the common case
    for (int c = 0; c < 4; ++c) {
      v[c] = _mm256_loadu_ps(sm + 8 * c);
      top = _mm256_max_ps(top, v[c]);
    }
  } else {
    for (int c = 0; c < 4; ++c) {
      const __m256i j = _mm256_add_epi32(_mm256_set1_epi32(8 * c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256 hidden = _mm256_castsi256_ps(_mm256_or_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(b), j),
                                                                _mm256_cmpgt_epi32(j, _mm256_set1_epi32(e - 1))));
      v[c] = _mm256_blendv_ps(_mm256_loadu_ps(sm + 8 * c), neg_inf, hidden);
      top = _mm256_max_ps(top, v[c]);
    }
  }
  const float mnew = std::max(mx, simd::hmax(top));
  __m256 sum = _mm256_setzero_ps();
#if defined(ASTRAI_ISA_AVX512)
  // the same weights two 8-key groups per register
  using simd::F16;
  const __m512 mv = _mm512_set1_ps(mnew);
  const __m512 w01 = simd::exp2_nonpositive_lanes<F16>(_mm512_sub_ps(_mm512_insertf32x8(_mm512_castps256_ps512(v[0]), v[1], 1), mv));
  const __m512 w23 = simd::exp2_nonpositive_lanes<F16>(_mm512_sub_ps(_mm512_insertf32x8(_mm512_castps256_ps512(v[2]), v[3], 1), mv));
  _mm512_storeu_ps(sm, w01);
  _mm512_storeu_ps(sm + 16, w23);
  v[0] = _mm512_castps512_ps256(w01);
  v[1] = _mm512_extractf32x8_ps(w01, 1);
  v[2] = _mm512_castps512_ps256(w23);
  v[3] = _mm512_extractf32x8_ps(w23, 1);
  for (int c = 0; c < 4; ++c) sum = _mm256_add_ps(sum, v[c]);  // lane i: offsets i, i+8, i+16, i+24, in order
#else
  const __m256 mv = _mm256_set1_ps(mnew);
  for (int c = 0; c < 4; ++c) {
    v[c] = exp2_nonpositive(_mm256_sub_ps(v[c], mv));
    _mm256_storeu_ps(sm + 8 * c, v[c]);
    sum = _mm256_add_ps(sum, v[c]);  // lane i: the keys at offsets i, i+8, i+16, i+24, in order
  }
#endif
  // exp2(mx - mnew): exactly 1 when the maximum holds, 0 for the first visible tile
  const float alpha = mnew == mx ? 1.0f : mx == kNegInf ? 0.0f
                                        : _mm256_cvtss_f32(exp2_nonpositive(_mm256_set1_ps(mx - mnew)));
  l = std::fma(l, alpha, tree8(sum));
  mx = mnew;
  return alpha;
}

// Every unit: scores S[m * kStride + j] (tile offset j) per head, the softmax vector by vector,
// then P V in register blocks of vectors. Decode-sized units read K/V in place (each row once per
// head's few vectors); chunk units, whose many vectors reread each row, convert float16 /
// bfloat16 tiles to float32 once (the keys as columns in avx512 builds).
// `fetched`: the first tile was already requested (by the unit before); `following` (may be
// null): the unit this thread runs next, whose first tile streams in during this one's last.
template <typename L>
void run_tiles(const Problem& p, const Item& it, Scratch& s, Accum acc, bool fetched, const Item* following) {
  using T = typename L::T;
  const int64_t D = p.head_dim;
  const int per_head = it.rows * static_cast<int>(p.group);
  const int M = per_head * it.heads;
  const int Mp = static_cast<int>(round_up(M, 8));
  const bool convert = p.kv_type != KvType::F32 && per_head > kDirectMaxVectors;
  grow(s.s, static_cast<size_t>(M) * kStride);
#if defined(ASTRAI_ISA_AVX512)
  // many vectors per head: keys as columns, each score one lane of a 16-key register
  const bool columns = per_head > kDirectMaxVectors;
  if (columns) {
    grow(s.kcols, kTile * D);
    grow(s.zero, D);  // a key row of zeros in any KV type (all-zero bits); never written
  }
#endif
  if (convert) {
    grow(s.kconv, kTile * D);
    grow(s.vconv, kTile * D);
    grow(s.kf, kTile);
    grow(s.vf, kTile);
  }
  float* S = s.s.data();
  const T* krow[kTile];
  const T* vrow[kTile];
  const int first_tile = it.key0 / kTile * kTile;
  for (int tile = first_tile; tile < it.key1; tile += kTile) {
    const TileKeys t{tile, std::max(tile, it.key0), std::min(tile + kTile, it.key1)};
    const int j0 = t.k0 - tile, nk = t.k1 - t.k0;
    const int next = std::min(kTile, it.key1 - tile - kTile);  // keys of the next tile (<= 0: none)
    if (tile == first_tile && !fetched) rows_ahead(p, it.seq, it.kv_head, it.heads, t.k0, nk).fetch(0, kTile);
    visible(p, it, t, Mp, s);
    for (int h = 0; h < it.heads; ++h) {
      tile_rows(p, it.seq, it.kv_head + h, t.k0, nk, krow, vrow);
      NextRows ahead;
      if (next > 0) {
        ahead = rows_ahead(p, it.seq, it.kv_head + h, 1, tile + kTile, next);
      } else if (following != nullptr) {  // head h's share of the following unit's first tile
        const Item& f = *following;
        const int f0 = f.key0, fn = std::min(f.key0 / kTile * kTile + kTile, f.key1) - f0;
        const int lo = fn * h / it.heads, hi = fn * (h + 1) / it.heads;
        ahead = rows_ahead(p, f.seq, f.kv_head, f.heads, f0 + lo, hi - lo);
      }
      const float* qh = s.q.data() + static_cast<int64_t>(h) * per_head * D;
#if defined(ASTRAI_ISA_AVX512)
      if (columns) {
        float* kt = s.kcols.data();
        key_columns<L>(krow, j0, nk, D, reinterpret_cast<const T*>(s.zero.data()), kt);
        scores_columns(qh, per_head, D, kt, j0, j0 + nk, S + static_cast<int64_t>(h) * per_head * kStride, kStride,
                       ahead);
        continue;
      }
#endif
      float* sh = S + static_cast<int64_t>(h) * per_head * kStride + j0;
      if (convert) {
        for (int i = 0; i < nk; ++i) {
          float* kd = s.kconv.data() + i * D;
          for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(kd + d, L::load(krow[i] + d));
          s.kf[i] = kd;
        }
        scores<F32Rows>(qh, per_head, D, s.kf.data(), nk, sh, 1, kStride, ahead);
      } else {
        scores<L>(qh, per_head, D, krow, nk, sh, 1, kStride, ahead);
      }
    }
    for (int m = 0; m < M; ++m) {
      const int b = s.begin[m], e = s.end[m];
      s.alpha[m] = e > b ? softmax_vector(S + static_cast<int64_t>(m) * kStride, b, e, acc.mx[m], acc.l[m]) : 1.0f;
    }
    for (int h = 0; h < it.heads; ++h) {
      const int m0 = h * per_head;
      const float* P = S + static_cast<int64_t>(m0) * kStride;
      float* o = acc.o + static_cast<int64_t>(m0) * D;
      tile_rows(p, it.seq, it.kv_head + h, t.k0, nk, krow, vrow);
      if (convert) {
        for (int i = 0; i < nk; ++i) {
          float* vd = s.vconv.data() + i * D;
          for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(vd + d, L::load(vrow[i] + d));
          s.vf[i] = vd;
        }
        pv_tile<F32Rows>(t, P, 1, kStride, s.vf.data(), s.begin.data() + m0, s.end.data() + m0, s.alpha.data() + m0, o,
                         per_head, D);
      } else {
        pv_tile<L>(t, P, 1, kStride, vrow, s.begin.data() + m0, s.end.data() + m0, s.alpha.data() + m0, o, per_head, D);
      }
    }
  }
}

template <typename L>
void run_unit(const Problem& p, const Item& it, Scratch& s, Accum acc, bool fetched, const Item* following) {
  const int64_t D = p.head_dim, G = p.group;
  const int per_head = it.rows * static_cast<int>(G);
  const int M = per_head * it.heads;
  const int Mp = static_cast<int>(round_up(M, 8));
  grow(s.q, static_cast<size_t>(M) * D);
  grow(s.alpha, Mp);
  grow(s.begin, Mp);
  grow(s.end, Mp);
  const __m256 c = _mm256_set1_ps(p.c);
  float* dst = s.q.data();  // vector m = (h * rows + r) * G + g
  for (int h = 0; h < it.heads; ++h)
    for (int r = 0; r < it.rows; ++r)
      for (int64_t g = 0; g < G; ++g, dst += D) {
        const float* src = p.q + (it.row0 + r) * p.q_row + ((it.kv_head + h) * G + g) * p.q_head;
        for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(c, _mm256_loadu_ps(src + d)));
      }
  std::fill(acc.o, acc.o + static_cast<int64_t>(M) * D, 0.0f);
  std::fill(acc.mx, acc.mx + Mp, kNegInf);
  std::fill(acc.l, acc.l + Mp, 0.0f);
  run_tiles<L>(p, it, s, acc, fetched, following);
}

void run_unit_any(const Problem& p, const Item& it, Scratch& s, Accum acc, bool fetched, const Item* following) {
  switch (p.kv_type) {
    case KvType::F32: run_unit<F32Rows>(p, it, s, acc, fetched, following); break;
    case KvType::F16: run_unit<F16Rows>(p, it, s, acc, fetched, following); break;
    case KvType::BF16: run_unit<BF16Rows>(p, it, s, acc, fetched, following); break;
  }
}

// dst[d] = w * src[d] for d < D (a multiple of 8): the same product per element at any width.
void scaled_row(float w, const float* src, float* dst, int64_t D) {
  int64_t d = 0;
#if defined(ASTRAI_ISA_AVX512)
  for (; d + 16 <= D; d += 16) _mm512_storeu_ps(dst + d, _mm512_mul_ps(_mm512_set1_ps(w), _mm512_loadu_ps(src + d)));
#endif
  for (; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_set1_ps(w), _mm256_loadu_ps(src + d)));
}

// dst[d] = fma(w, src[d], dst[d]) for d < D (a multiple of 8), likewise.
void fma_row(float w, const float* src, float* dst, int64_t D) {
  int64_t d = 0;
#if defined(ASTRAI_ISA_AVX512)
  for (; d + 16 <= D; d += 16)
    _mm512_storeu_ps(dst + d, _mm512_fmadd_ps(_mm512_set1_ps(w), _mm512_loadu_ps(src + d), _mm512_loadu_ps(dst + d)));
#endif
  for (; d < D; d += 8)
    _mm256_storeu_ps(dst + d, _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(src + d), _mm256_loadu_ps(dst + d)));
}

void write_normalised(const Problem& p, const Item& it, const Accum& acc) {
  const int64_t D = p.head_dim, M = item_vectors(p, it);
  for (int64_t m = 0; m < M; ++m) scaled_row(1.0f / acc.l[m], acc.o + m * D, out_vector(p, it, m), D);
}

// Partial results of piece k of a split item: o [M, D], then mx [Mp], then l [Mp].
int64_t piece_floats(int64_t M, int64_t D) { return M * D + 2 * round_up(M, 8); }

Accum piece_accum(float* base, int64_t M, int64_t D) {
  return Accum{base, base + M * D, base + M * D + round_up(M, 8)};
}

float exp2_scalar(float x) { return _mm256_cvtss_f32(exp2_nonpositive(_mm256_set1_ps(x))); }

void merge_pieces(const Problem& p, const Item& it, float* base, int pieces) {
  const int64_t D = p.head_dim, M = item_vectors(p, it), stride = piece_floats(M, D);
  std::vector<float> sum(D);
  for (int64_t m = 0; m < M; ++m) {
    float top = kNegInf;
    for (int k = 0; k < pieces; ++k) top = std::max(top, piece_accum(base + k * stride, M, D).mx[m]);
    float total = 0.0f;
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int k = 0; k < pieces; ++k) {
      const Accum a = piece_accum(base + k * stride, M, D);
      if (a.mx[m] == kNegInf) continue;  // this piece saw no visible key for the vector
      const float w = exp2_scalar(a.mx[m] - top);
      total = std::fma(w, a.l[m], total);
      fma_row(w, a.o + m * D, sum.data(), D);
    }
    scaled_row(1.0f / total, sum.data(), out_vector(p, it, m), D);
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
                     const at::Tensor& query_start_loc, double scale, int64_t window, const at::Tensor& out) {
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
  TORCH_CHECK(window >= 0 && window <= std::numeric_limits<int32_t>::max(),
              "paged_attention: window must be >= 0 (0: no sliding window), got ", window);
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
  p.c = static_cast<float>(scale) * kLog2e;
  p.window = static_cast<int32_t>(window);

  // Items: a decode-sized sequence whole, or (KV head, block of query rows) of a longer chunk,
  // over the keys its rows can see.
  const int64_t G = p.group;
  const int64_t block_rows = std::max<int64_t>(1, kBlockVectors / G);
  const int64_t per_key = 4 + 2 * D * p.elem_bytes / 64;  // rough cost of one key besides its math
  std::vector<Item> items;
  int64_t total_cost = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t q_len = qsl[b + 1] - qsl[b];
    if (q_len == 0) continue;
    const int32_t first = ctx[b] - q_len;
    auto add = [&](int32_t kv_head, int32_t heads, int32_t r, int32_t rows) {
      Item it{static_cast<int32_t>(b), kv_head, heads, qsl[b] + r, rows, first + r, lowest_key(p, first + r),
              first + r + rows, -1, 0, 0};
      it.cost = static_cast<int64_t>(it.key1 - it.key0) * heads * (rows * G + per_key);
      total_cost += it.cost;
      items.push_back(it);
    };
    if (q_len * G <= kDirectMaxVectors) {  // decode-sized: one item streams every KV head
      add(0, static_cast<int32_t>(KVH), 0, q_len);
      continue;
    }
    for (int32_t r = 0; r < q_len; r += static_cast<int32_t>(block_rows))
      for (int32_t h = 0; h < KVH; ++h) add(h, 1, r, static_cast<int32_t>(std::min<int64_t>(block_rows, q_len - r)));
  }

  const int threads = total_cost < kSerialCost ? 1 : num_threads();
  // Items spanning several pieces become one unit per piece (piece boundaries at absolute
  // multiples of 128 keys: a function of the keys alone, never of the batch or the threads).
  std::vector<SplitGroup> groups;
  int64_t partial_floats = 0;
  {
    std::vector<Item> split;
    split.reserve(items.size());
    for (const Item& it : items) {
      const int32_t first_piece = it.key0 / kPieceKeys, last_piece = (it.key1 - 1) / kPieceKeys;
      if (first_piece == last_piece) {
        split.push_back(it);
        continue;
      }
      const int32_t id = static_cast<int32_t>(groups.size());
      const int32_t pieces = last_piece - first_piece + 1;
      groups.push_back(SplitGroup{partial_floats, pieces});
      partial_floats += pieces * piece_floats(item_vectors(p, it), D);
      for (int32_t k = 0; k < pieces; ++k) {
        Item unit = it;
        unit.key0 = std::max(it.key0, (first_piece + k) * kPieceKeys);
        unit.key1 = std::min(it.key1, (first_piece + k + 1) * kPieceKeys);
        unit.group_id = id;
        unit.piece = k;
        unit.cost = it.cost * (unit.key1 - unit.key0) / (it.key1 - it.key0);
        split.push_back(unit);
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
    std::vector<float> whole;
    bool fetched = false;
    // While enough units remain for the other threads, the next one is claimed before this one
    // runs, so its first tile streams in meanwhile; near the end each thread takes one at a time.
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < count;) {
      int64_t after = -1;
      if (next.load(std::memory_order_relaxed) + threads <= count) after = next.fetch_add(1, std::memory_order_relaxed);
      const Item* following = after >= 0 && after < count ? &items[after] : nullptr;
      const Item& it = items[i];
      const int64_t M = item_vectors(p, it);
      if (it.group_id < 0) {
        whole.resize(piece_floats(M, D));
        const Accum acc = piece_accum(whole.data(), M, D);
        run_unit_any(p, it, s, acc, fetched, following);
        write_normalised(p, it, acc);
      } else {
        const SplitGroup& g = groups[it.group_id];
        float* base = partials.get() + g.offset;
        run_unit_any(p, it, s, piece_accum(base + it.piece * piece_floats(M, D), M, D), fetched, following);
        if (remaining[it.group_id].fetch_sub(1, std::memory_order_acq_rel) == 1) merge_pieces(p, it, base, g.pieces);
      }
      fetched = following != nullptr;
      i = after >= 0 ? after : next.fetch_add(1, std::memory_order_relaxed);
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

}  // namespace astrai
