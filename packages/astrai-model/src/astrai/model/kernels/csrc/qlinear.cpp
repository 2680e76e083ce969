// Low-bit linear kernels over the packed layout (packed_layout.h), written once against the
// per-ISA lane helpers (isa/lanes.h). One kernel serves every M: a tile of output rows (one
// group of 8 on AVX2, two on AVX-512) has its weights unpacked once per block into 8 vectors of
// small unsigned codes (32-bit lane = one row's 4 consecutive weights) and reused for up to
// kTileRows activation rows, whose 4-byte slices are broadcast to every lane: the int8 dot
// products need no horizontal sums and the scales of all the tile's rows apply in one FMA.
// avx512 builds without AMX also have a row-lane kernel for prefill-sized calls (>= 64 rows,
// K <= 1024): the same operations with the operands' roles swapped (see its section).
// Arithmetic: qlinear.h.
#include "qlinear.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "isa/amx.h"
#include "isa/lanes.h"
#include "parallel.h"
#include "quant_pack.h"
#include "simd.h"

#ifndef ASTRAI_QLINEAR_ROW_CHUNK
#define ASTRAI_QLINEAR_ROW_CHUNK 64
#endif
#ifndef ASTRAI_QLINEAR_PREFETCH
#define ASTRAI_QLINEAR_PREFETCH 4096  // bytes ahead along each weight stream (docs/kernels.md, note 12)
#endif

namespace astrai {
namespace {

using isa::Lanes8;

// ---- activations ----

// Blocks whose amax is below this are zero: it keeps 1/d finite and d a normal float.
constexpr float kTinyBlock = 0x1p-110f;

struct ActivationRow {
  int8_t* q_hi;
  int8_t* q_lo;
  int16_t* a;
  float* d;
  float* ds;
  int32_t* sum;
  int32_t* sum16;
};

// Blocks whose amax is below kTinyBlock (or NaN) quantize to zero.
inline void zero_block(int64_t b, const ActivationRow& o) {
  std::memset(o.q_hi + b * kQBlock, 0, kQBlock);
  std::memset(o.q_lo + b * kQBlock, 0, kQBlock);
  std::memset(o.a + b * kQBlock, 0, kQBlock * sizeof(int16_t));
  o.d[b] = o.ds[b] = 0.0f;
  o.sum[b] = o.sum16[2 * b] = o.sum16[2 * b + 1] = 0;
}

#if defined(ASTRAI_ISA_AVX512)
inline __m512i clamp127(__m512i v) {
  return _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
}

// quantize_row below, a block per two 16-lane vectors: the same operations per element (and the
// same max tree, so even a NaN meets the same comparisons), so the same bytes. The four scale
// divisions run for 16 blocks at once (IEEE division rounds the same in any width).
void quantize_row(const float* x, int64_t nb, const ActivationRow& o) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t b0 = 0; b0 < nb; b0 += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, nb - b0));
    alignas(64) float amax[16] = {}, d_hi[16], d_lo[16], inv_hi[16], inv_lo[16];
    for (int i = 0; i < n; ++i) {
      const float* xb = x + (b0 + i) * kQBlock;
      const __m512 a0 = _mm512_and_ps(_mm512_loadu_ps(xb), abs_mask);
      const __m512 a1 = _mm512_and_ps(_mm512_loadu_ps(xb + 16), abs_mask);
      amax[i] = simd::hmax(_mm256_max_ps(_mm256_max_ps(_mm512_castps512_ps256(a0), _mm512_extractf32x8_ps(a0, 1)),
                                         _mm256_max_ps(_mm512_castps512_ps256(a1), _mm512_extractf32x8_ps(a1, 1))));
    }
    const __m512 vd_hi = _mm512_div_ps(_mm512_load_ps(amax), _mm512_set1_ps(127.0f));
    const __m512 vd_lo = _mm512_div_ps(vd_hi, _mm512_set1_ps(254.0f));
    _mm512_store_ps(d_hi, vd_hi);
    _mm512_store_ps(d_lo, vd_lo);
    _mm512_store_ps(inv_hi, _mm512_div_ps(_mm512_set1_ps(1.0f), vd_hi));
    _mm512_store_ps(inv_lo, _mm512_div_ps(_mm512_set1_ps(1.0f), vd_lo));
    for (int i = 0; i < n; ++i) {
      const int64_t b = b0 + i;
      if (!(amax[i] >= kTinyBlock)) {
        zero_block(b, o);
        continue;
      }
      const float* xb = x + b * kQBlock;
      int32_t half_sums[2];
      for (int j = 0; j < 2; ++j) {
        const __m512 v = _mm512_loadu_ps(xb + 16 * j);
        const __m512i hi = clamp127(_mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(inv_hi[i]))));
        const __m512 r = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_set1_ps(d_hi[i]), v);
        const __m512i lo = clamp127(_mm512_cvtps_epi32(_mm512_mul_ps(r, _mm512_set1_ps(inv_lo[i]))));
        // 254 hi = 256 hi - 2 hi; |a| <= 32385
        const __m512i whole = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(hi, 8), _mm512_slli_epi32(hi, 1)), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.a + b * kQBlock + 16 * j), _mm512_cvtepi32_epi16(whole));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q_hi + b * kQBlock + 16 * j), _mm512_cvtepi32_epi8(hi));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q_lo + b * kQBlock + 16 * j), _mm512_cvtepi32_epi8(lo));
        half_sums[j] = _mm512_reduce_add_epi32(whole);  // |sum| <= 16 * 32385: exact
      }
      o.d[b] = d_lo[i];
      o.sum16[2 * b] = half_sums[0];
      o.sum16[2 * b + 1] = half_sums[1];
      o.sum[b] = half_sums[0] + half_sums[1];
      o.ds[b] = d_lo[i] * static_cast<float>(half_sums[0] + half_sums[1]);
    }
  }
}
#else
inline int32_t hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline __m256i clamp127(__m256i v) {
  return _mm256_max_epi32(_mm256_min_epi32(v, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
}

// Four vectors of 8 int32 (each in [-127, 127]) -> 32 int8 in element order.
inline void store_int8(const __m256i (&i)[4], int8_t* out) {
  // packs interleave 128-bit lanes; the permute restores element order.
  __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
}

// One row, per block of 32 (qlinear.h): q_hi at d_hi = amax/127, the residual's q_lo at
// d = d_hi/254, both round-half-even (cvtps with the default MXCSR mode, as torch.round).
void quantize_row(const float* x, int64_t nb, const ActivationRow& o) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i k254 = _mm256_set1_epi32(254);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQBlock;
    __m256 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(xb + 8 * j);
    const __m256 amax8 = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                                       _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
    const float amax = simd::hmax(amax8);
    if (!(amax >= kTinyBlock)) {
      zero_block(b, o);
      continue;
    }
    const float d_hi = amax / 127.0f;
    const float d_lo = d_hi / 254.0f;
    const __m256 vd_hi = _mm256_set1_ps(d_hi);
    const __m256 inv_hi = _mm256_set1_ps(1.0f / d_hi);
    const __m256 inv_lo = _mm256_set1_ps(1.0f / d_lo);
    __m256i hi[4], lo[4], whole[4];
    for (int j = 0; j < 4; ++j) {
      hi[j] = clamp127(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv_hi)));
      // fma: x - q_hi*d_hi rounded once; |r| <= d_hi/2, so r/d is within [-127, 127] but for rounding.
      const __m256 r = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(hi[j]), vd_hi, v[j]);
      lo[j] = clamp127(_mm256_cvtps_epi32(_mm256_mul_ps(r, inv_lo)));
      whole[j] = _mm256_add_epi32(_mm256_mullo_epi32(hi[j], k254), lo[j]);  // |a| <= 32385
    }
    for (int j = 0; j < 2; ++j) {  // int32 -> int16 in element order (packs interleave 128-bit lanes)
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(whole[2 * j], whole[2 * j + 1]), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.a + b * kQBlock + 16 * j), packed);
    }
    store_int8(hi, o.q_hi + b * kQBlock);
    store_int8(lo, o.q_lo + b * kQBlock);
    const int32_t first = hsum8(_mm256_add_epi32(whole[0], whole[1]));  // |sum| <= 32 * 32385
    const int32_t second = hsum8(_mm256_add_epi32(whole[2], whole[3]));
    o.d[b] = d_lo;
    o.sum16[2 * b] = first;
    o.sum16[2 * b + 1] = second;
    o.sum[b] = first + second;
    o.ds[b] = d_lo * static_cast<float>(first + second);
  }
}
#endif

// ---- weights ----

// Where a tile's packed bytes are: group g's first block in each region, and the byte strides.
struct TileBytes {
  const uint8_t* quants;
  const uint8_t* scales;
  const uint8_t* super;
  int64_t quant_group, scale_group, super_group;  // to the next group (the second of a Lanes16 tile)
};

// The 8 weight vectors of block b: w[j] = the codes of weights 4j .. 4j+3 of every row.
template <QType QT, class V>
inline void unpack(const uint8_t* q, int64_t gs, typename V::I (&w)[8]) {
  constexpr Layout L = layout_of(QT);
  using I = typename V::I;
  if constexpr (L.nibbles > 0) {
    const I low4 = V::splat8(0x0F);
    #pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const I raw = V::load(q + 32 * c, gs);
      w[c] = V::and_(raw, low4);
      w[c + 4] = V::and_(V::template shift16<-4>(raw), low4);
    }
  }
  if constexpr (L.plane2 > 0) {
    const uint8_t* p2 = q + L.nibbles;
    if constexpr (QT == QType::Q6_K) {  // bits 4-5 of the code
      const I mask = V::splat8(0x30);
      #pragma GCC unroll 2
      for (int c = 0; c < 2; ++c) {
        const I raw = V::load(p2 + 32 * c, gs);
        w[4 * c + 0] = V::or_(w[4 * c + 0], V::and_(V::template shift16<4>(raw), mask));
        w[4 * c + 1] = V::or_(w[4 * c + 1], V::and_(V::template shift16<2>(raw), mask));
        w[4 * c + 2] = V::or_(w[4 * c + 2], V::and_(raw, mask));
        w[4 * c + 3] = V::or_(w[4 * c + 3], V::and_(V::template shift16<-2>(raw), mask));
      }
    } else {  // Q3_K: bits 0-1
      const I mask = V::splat8(0x03);
      #pragma GCC unroll 2
      for (int c = 0; c < 2; ++c) {
        const I raw = V::load(p2 + 32 * c, gs);
        w[4 * c + 0] = V::and_(raw, mask);
        w[4 * c + 1] = V::and_(V::template shift16<-2>(raw), mask);
        w[4 * c + 2] = V::and_(V::template shift16<-4>(raw), mask);
        w[4 * c + 3] = V::and_(V::template shift16<-6>(raw), mask);
      }
    }
  }
  if constexpr (L.plane1 > 0) {
    // bit j of each byte is vector j's bit: moved to bit 4 (Q5 types) or bit 2 (Q3_K)
    constexpr int kTo = QT == QType::Q3_K ? 2 : 4;
    const I raw = V::load(q + L.nibbles + L.plane2, gs);
    const I mask = V::splat8(1 << kTo);
    w[0] = V::or_(w[0], V::and_(V::template shift16<kTo - 0>(raw), mask));
    w[1] = V::or_(w[1], V::and_(V::template shift16<kTo - 1>(raw), mask));
    w[2] = V::or_(w[2], V::and_(V::template shift16<kTo - 2>(raw), mask));
    w[3] = V::or_(w[3], V::and_(V::template shift16<kTo - 3>(raw), mask));
    w[4] = V::or_(w[4], V::and_(V::template shift16<kTo - 4>(raw), mask));
    w[5] = V::or_(w[5], V::and_(V::template shift16<kTo - 5>(raw), mask));
    w[6] = V::or_(w[6], V::and_(V::template shift16<kTo - 6>(raw), mask));
    w[7] = V::or_(w[7], V::and_(V::template shift16<kTo - 7>(raw), mask));
  }
}

// Block b's scales s (both 16-weight spans; equal for 32-weight types) of every row of the tile.
template <QType QT, class V>
inline void block_scales(const uint8_t* sc, const uint8_t* sup, const TileBytes& t, typename V::F& s0,
                         typename V::F& s1) {
  if constexpr (QT == QType::Q4_K || QT == QType::Q5_K) {
    s0 = s1 = V::mul(V::f16(sup, t.super_group), V::u8(sc, t.scale_group));
  } else if constexpr (QT == QType::Q6_K || QT == QType::Q3_K) {
    const typename V::F d = V::f16(sup, t.super_group);
    s0 = V::mul(d, V::i8(sc, t.scale_group));
    s1 = V::mul(d, V::i8(sc + 8, t.scale_group));
  } else {
    s0 = s1 = V::f16(sc, t.scale_group);
  }
}

// Block b's additive min m of every row (types with a min).
template <QType QT, class V>
inline typename V::F block_min(const uint8_t* sc, const uint8_t* sup, const TileBytes& t) {
  if constexpr (QT == QType::Q4_K || QT == QType::Q5_K) {
    return V::neg(V::mul(V::f16(sup + 16, t.super_group), V::u8(sc + 8, t.scale_group)));  // -(dmin * m)
  } else {
    return V::f16(sc + 16, t.scale_group);
  }
}

// Byte offset, from a tile's first group, of position p along its first stream (the second is
// one group further): a thread's tiles are consecutive, so each stream continues in the same
// stream of the next tile, G groups on.
template <int G>
inline int64_t stream_offset(int64_t p, int64_t group) {
  if constexpr (G == 1) return p;
  else return p < group ? p : p / group * (G * group) + p % group;
}

// ---- the tile kernel ----

// Activation rows m0 .. m0+MT-1 against one tile of output rows over all nb blocks.
template <QType QT, class V, int MT>
void tile(const QuantizedActivations& a, int64_t m0, const TileBytes& t, int64_t nb, float* out, int64_t ldo,
          int valid, const float* bias) {
  constexpr Layout L = layout_of(QT);
  using I = typename V::I;
  using F = typename V::F;
  const int64_t K = a.K;
  const int64_t QB = L.quant_bytes(), SB = L.scales, XB = L.super;
  F acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = V::fzero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qb = t.quants + b * QB;
    const uint8_t* sb = t.scales + b * SB;
    const uint8_t* xb = L.k_scales ? t.super + (b / kBlocksPerSuper) * XB : nullptr;
    if constexpr (ASTRAI_QLINEAR_PREFETCH > 0) {
      // The weights stream from DRAM once per call: ask for them well before they are needed,
      // along each of the tile's kGroups streams (into the next tiles when a group is short).
      for (int64_t line = 0; line < QB; line += 64) {
        const int64_t ahead = stream_offset<V::kGroups>(b * QB + ASTRAI_QLINEAR_PREFETCH + line, t.quant_group);
        _mm_prefetch(reinterpret_cast<const char*>(t.quants + ahead), _MM_HINT_T0);
        if constexpr (V::kGroups == 2)
          _mm_prefetch(reinterpret_cast<const char*>(t.quants + t.quant_group + ahead), _MM_HINT_T0);
      }
    }
    F s0, s1;
    block_scales<QT, V>(sb, xb, t, s0, s1);
    if constexpr (QT == QType::Q8_0) {
      const F s = V::q8_order(s0);
      #pragma GCC unroll 8
      for (int r = 0; r < MT; ++r) {
        const I i = V::dot_q8(qb, t.quant_group, a.a + (m0 + r) * K + b * kQBlock);
        acc[r] = V::fma(V::cvt(i), V::mul(s, V::fset1(a.d[(m0 + r) * (K / kQBlock) + b])), acc[r]);
      }
    } else {
      I w[8];
      unpack<QT, V>(qb, t.quant_group, w);
      #pragma GCC unroll 8
      for (int r = 0; r < MT; ++r) {
        const int64_t row = m0 + r;
        const int8_t* xh = a.q_hi + row * K + b * kQBlock;
        const int8_t* xl = a.q_lo + row * K + b * kQBlock;
        const F d = V::fset1(a.d[row * (K / kQBlock) + b]);
        if constexpr (L.halves) {
          I i0 = V::template dot2<L.max_code, 0, 4>(w, xh, xl);
          I i1 = V::template dot2<L.max_code, 4, 8>(w, xh, xl);
          if constexpr (L.offset != 0) {
            i0 = V::sub32(i0, V::splat32(L.offset * a.sum16[row * (K / 16) + 2 * b]));
            i1 = V::sub32(i1, V::splat32(L.offset * a.sum16[row * (K / 16) + 2 * b + 1]));
          }
          acc[r] = V::fma(V::cvt(i0), V::mul(s0, d), acc[r]);
          acc[r] = V::fma(V::cvt(i1), V::mul(s1, d), acc[r]);
        } else {
          I i = V::template dot2<L.max_code, 0, 8>(w, xh, xl);
          if constexpr (L.offset != 0) i = V::sub32(i, V::splat32(L.offset * a.sum[row * (K / kQBlock) + b]));
          acc[r] = V::fma(V::cvt(i), V::mul(s0, d), acc[r]);
        }
      }
    }
  }
  if constexpr (L.has_min) {
    // low = sum_b m[b] * ds[b], its own FMA chain after the main one
    F low[MT];
    for (int r = 0; r < MT; ++r) low[r] = V::fzero();
    for (int64_t b = 0; b < nb; ++b) {
      const F m = block_min<QT, V>(t.scales + b * SB, L.k_scales ? t.super + (b / kBlocksPerSuper) * XB : nullptr, t);
      for (int r = 0; r < MT; ++r) low[r] = V::fma(m, V::fset1(a.ds[(m0 + r) * (K / kQBlock) + b]), low[r]);
    }
    for (int r = 0; r < MT; ++r) acc[r] = V::add(acc[r], low[r]);
  }
  for (int r = 0; r < MT; ++r) {
    F y = acc[r];
    if constexpr (QT == QType::Q8_0) y = V::q8_restore(y);
    V::store(out + (m0 + r) * ldo, y, valid, bias);
  }
}


#if defined(ASTRAI_ISA_AMX)
// AMX-INT8: 16 activation rows x one tile of 16 output rows. Per block the 8 unpacked weight
// vectors are, stored in order, exactly the B tile (row j = every output's 4 codes k = 4j..4j+3);
// the activations' q_hi / q_lo rows load straight into A tiles; TDPBSUD / TDPBSSD give each
// span's exact int32 sums (the same integers as the vector path), and the epilogue runs the
// same float operations as tile(), so results are bit-identical to the other variants.
template <QType QT>
void amx_tile(const QuantizedActivations& a, int64_t m0, const TileBytes& t, int64_t nb, float* out, int64_t ldo,
              int valid, const float* bias) {
  using V = isa::Lanes16;
  using I = V::I;
  using F = V::F;
  constexpr Layout L = layout_of(QT);
  constexpr int kSpan = L.halves ? 16 : 32;
  static const isa::TileConfig config = isa::qlinear_tiles(kSpan);
  isa::request_tile_permission();
  isa::load_tile_config(config, kSpan);
  const int64_t K = a.K, QB = L.quant_bytes(), SB = L.scales, XB = L.super;
  alignas(64) uint8_t weights[8 * 64];
  alignas(64) int32_t hi[2][16 * 16], lo[2][16 * 16];
  F acc[16];
  for (int r = 0; r < 16; ++r) acc[r] = V::fzero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qb = t.quants + b * QB;
    const uint8_t* sb = t.scales + b * SB;
    const uint8_t* xb = L.k_scales ? t.super + (b / kBlocksPerSuper) * XB : nullptr;
    I w[8];
    if constexpr (QT == QType::Q8_0) {
      for (int j = 0; j < 8; ++j) w[j] = V::load(qb + 32 * j, t.quant_group);
    } else {
      unpack<QT, V>(qb, t.quant_group, w);
    }
    for (int j = 0; j < 8; ++j) _mm512_store_si512(reinterpret_cast<__m512i*>(weights + 64 * j), w[j]);
    const int8_t* xh = a.q_hi + m0 * K + b * kQBlock;
    const int8_t* xl = a.q_lo + m0 * K + b * kQBlock;
    _tile_loadd(0, xh, K);
    _tile_loadd(1, xl, K);
    _tile_loadd(2, weights, 64);
    _tile_zero(3);
    _tile_zero(4);
    if constexpr (QT == QType::Q8_0) {
      _tile_dpbssd(3, 0, 2);
      _tile_dpbssd(4, 1, 2);
    } else {
      _tile_dpbsud(3, 0, 2);
      _tile_dpbsud(4, 1, 2);
    }
    _tile_stored(3, hi[0], 64);
    _tile_stored(4, lo[0], 64);
    if constexpr (kSpan == 16) {  // the second half: k 16..31, weight vectors 4..7
      _tile_loadd(0, xh + 16, K);
      _tile_loadd(1, xl + 16, K);
      _tile_loadd(5, weights + 4 * 64, 64);
      _tile_zero(6);
      _tile_zero(7);
      _tile_dpbsud(6, 0, 5);
      _tile_dpbsud(7, 1, 5);
      _tile_stored(6, hi[1], 64);
      _tile_stored(7, lo[1], 64);
    }
    F s0, s1;
    block_scales<QT, V>(sb, xb, t, s0, s1);
    for (int r = 0; r < 16; ++r) {
      const int64_t row = m0 + r;
      const F d = V::fset1(a.d[row * (K / kQBlock) + b]);
      for (int h = 0; h < (kSpan == 16 ? 2 : 1); ++h) {
        const I ch = _mm512_load_si512(hi[h] + 16 * r);
        I i = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(ch, 8), _mm512_slli_epi32(ch, 1)),
                               _mm512_load_si512(lo[h] + 16 * r));  // 254 * hi + lo
        if constexpr (L.offset != 0) {
          const int32_t sum = kSpan == 16 ? a.sum16[row * (K / 16) + 2 * b + h] : a.sum[row * (K / kQBlock) + b];
          i = V::sub32(i, V::splat32(L.offset * sum));
        }
        acc[r] = V::fma(V::cvt(i), V::mul(h == 0 ? s0 : s1, d), acc[r]);
      }
    }
  }
  if constexpr (L.has_min) {
    F low[16];
    for (int r = 0; r < 16; ++r) low[r] = V::fzero();
    for (int64_t b = 0; b < nb; ++b) {
      const F m = block_min<QT, V>(t.scales + b * SB, L.k_scales ? t.super + (b / kBlocksPerSuper) * XB : nullptr, t);
      for (int r = 0; r < 16; ++r) low[r] = V::fma(m, V::fset1(a.ds[(m0 + r) * (K / kQBlock) + b]), low[r]);
    }
    for (int r = 0; r < 16; ++r) acc[r] = V::add(acc[r], low[r]);
  }
  for (int r = 0; r < 16; ++r) V::store(out + (m0 + r) * ldo, acc[r], valid, bias);
}
#endif

#if defined(ASTRAI_ISA_AVX512) && !defined(ASTRAI_ISA_AMX)
// ---- row lanes (avx512 without AMX): 16 activation rows per vector ----
// The same integers and float operations per output as tile() (so the same bits), with the roles
// of the operands swapped: a vector holds one 4-byte activation slice of each of 16 rows, loaded
// once and shared by several outputs, whose 4 codes are broadcast. One broadcast then feeds both
// activation parts, where tile() broadcasts each part's slice per weight vector.
#define ASTRAI_QLINEAR_ROW_LANES 1
constexpr int64_t kLaneRows = 16;
constexpr int kPassOutputs = 4;  // outputs per pass: 4 int accumulators and 2 float ones each
// Below 64 rows the tile kernel is as fast; past 32 blocks (K > 1024) a pass's activations (1 KB
// a block) no longer stay in L1 beside the tile's codes, and the tile kernel wins again.
constexpr int64_t kLaneMinRows = 64;
constexpr int64_t kLaneMaxBlocks = 32;

// Rows [16g, 16g + 16) of the activations, block b: hi[(g * nb + b) * 8 + j] lane r = row 16g + r's
// q_hi bytes 32b + 4j .. 32b + 4j + 3 (lo likewise); d, ds, sum [(g * nb + b) * 16 + r]; sum16
// [((g * nb + b) * 2 + h) * 16 + r]. Whole groups only: a call's last M % 16 rows take the tile kernel.
struct RowLaneActivations {
  std::vector<__m512i> hi, lo;
  std::vector<float> d, ds;
  std::vector<int32_t> sum, sum16;
};

RowLaneActivations& thread_row_lanes() {
  static thread_local RowLaneActivations buffers;
  return buffers;
}

// r[i] = column i of the 16 x 16 32-bit matrix whose row k is r[k] on entry (the shuffle network
// leaves the columns in the order kColumnOf).
constexpr int kColumnOf[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};

inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int o = 0; o < 16; o += 2) {  // 32-bit interleave of row pairs
    t[o] = _mm512_unpacklo_ps(r[o], r[o + 1]);
    t[o + 1] = _mm512_unpackhi_ps(r[o], r[o + 1]);
  }
  for (int o = 0; o < 16; o += 4)
    for (int k = 0; k < 2; ++k) {  // 64-bit interleave
      r[o + k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[o + k]), _mm512_castps_pd(t[o + k + 2])));
      r[o + k + 2] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[o + k]), _mm512_castps_pd(t[o + k + 2])));
    }
  for (int o = 0; o < 16; o += 8)
    for (int k = 0; k < 4; ++k) {  // 128-bit lanes
      t[o + k] = _mm512_shuffle_f32x4(r[o + k], r[o + k + 4], 0x88);
      t[o + k + 4] = _mm512_shuffle_f32x4(r[o + k], r[o + k + 4], 0xDD);
    }
  for (int k = 0; k < 8; ++k) {  // 256-bit halves
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
  }
}

void transpose_rows(const QuantizedActivations& a, int64_t groups, RowLaneActivations& t) {
  const int64_t K = a.K, nb = K / kQBlock;
  const size_t slices = static_cast<size_t>(groups * nb * 8);
  if (t.hi.size() < slices) {
    t.hi.resize(slices);
    t.lo.resize(slices);
  }
  const size_t lanes = static_cast<size_t>(groups * nb * kLaneRows);
  if (t.d.size() < lanes) {
    t.d.resize(lanes);
    t.ds.resize(lanes);
    t.sum.resize(lanes);
    t.sum16.resize(2 * lanes);
  }
  parallel_for(0, groups, 4, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t at = g * nb + b;
        // row k: its block's q_hi bytes (8 slices) then its q_lo bytes; column c < 8 is hi slice c
        __m512 r[16];
        for (int k = 0; k < 16; ++k) {
          const int64_t offset = (g * kLaneRows + k) * K + b * kQBlock;
          r[k] = _mm512_castsi512_ps(_mm512_inserti64x4(
              _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q_hi + offset))),
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q_lo + offset)), 1));
        }
        transpose16(r);
        for (int i = 0; i < 16; ++i) {
          const int c = kColumnOf[i];
          __m512i* dst = c < 8 ? t.hi.data() + at * 8 + c : t.lo.data() + at * 8 + (c - 8);
          _mm512_store_si512(dst, _mm512_castps_si512(r[i]));
        }
        for (int k = 0; k < 16; ++k) {
          const int64_t row = g * kLaneRows + k;
          t.d[at * kLaneRows + k] = a.d[row * nb + b];
          t.ds[at * kLaneRows + k] = a.ds[row * nb + b];
          t.sum[at * kLaneRows + k] = a.sum[row * nb + b];
          t.sum16[(at * 2) * kLaneRows + k] = a.sum16[row * 2 * nb + 2 * b];
          t.sum16[(at * 2 + 1) * kLaneRows + k] = a.sum16[row * 2 * nb + 2 * b + 1];
        }
      }
  });
}

// A tile's codes, scales and mins for every block, as tile() unpacks them (lane = output).
struct UnpackedTile {
  std::vector<__m512i> codes;  // [b * 8 + j]
  std::vector<float> s0, s1, min;  // [b * 16 + lane]
};

UnpackedTile& thread_unpacked_tile() {
  static thread_local UnpackedTile buffers;
  return buffers;
}

template <QType QT>
void unpack_tile(const TileBytes& t, int64_t nb, int64_t next_tile_bytes, UnpackedTile& u) {
  using V = isa::Lanes16;
  constexpr Layout L = layout_of(QT);
  const int64_t QB = L.quant_bytes(), SB = L.scales, XB = L.super;
  if (u.codes.size() < static_cast<size_t>(nb * 8)) {
    u.codes.resize(nb * 8);
    u.s0.resize(nb * kLaneRows);
    u.s1.resize(nb * kLaneRows);
    u.min.resize(nb * kLaneRows);
  }
  // The next tile's weights (the following 2 groups, contiguous) stream in during this one's passes.
  for (int64_t line = 0; line < next_tile_bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(t.quants + 2 * t.quant_group + line), _MM_HINT_T0);
  for (int64_t b = 0; b < nb; ++b) {
    typename V::I w[8];
    unpack<QT, V>(t.quants + b * QB, t.quant_group, w);
    for (int j = 0; j < 8; ++j) _mm512_store_si512(u.codes.data() + b * 8 + j, w[j]);
    const uint8_t* xb = L.k_scales ? t.super + (b / kBlocksPerSuper) * XB : nullptr;
    typename V::F s0, s1;
    block_scales<QT, V>(t.scales + b * SB, xb, t, s0, s1);
    _mm512_storeu_ps(u.s0.data() + b * kLaneRows, s0);
    _mm512_storeu_ps(u.s1.data() + b * kLaneRows, s1);
    if constexpr (L.has_min) _mm512_storeu_ps(u.min.data() + b * kLaneRows, block_min<QT, V>(t.scales + b * SB, xb, t));
  }
}

// i -= offset * sums (per row), as tile() does per output with splat32.
template <int kOffset>
inline __m512i less_offset(__m512i i, const int32_t* sums) {
  if constexpr (kOffset == 0) return i;
  else return _mm512_sub_epi32(i, _mm512_mullo_epi32(_mm512_set1_epi32(kOffset), _mm512_loadu_si512(sums)));
}

// Outputs [o0, o0 + kPassOutputs) of the tile (lanes of u) for the 16 rows of group g, over every
// block, into y[o][r] (bias added). Two chains per part and output (even and odd j), as dot2.
template <QType QT>
void row_lane_pass(const RowLaneActivations& x, int64_t g, int64_t nb, const UnpackedTile& u, int o0,
                   const float* bias, float (*y)[kLaneRows]) {
  constexpr Layout L = layout_of(QT);
  constexpr int P = kPassOutputs;
  constexpr int kSpans = L.halves ? 2 : 1;
  const int32_t* codes = reinterpret_cast<const int32_t*>(u.codes.data());  // [(b * 8 + j) * 16 + lane]
  __m512 acc[P], low[P];
  for (int o = 0; o < P; ++o) acc[o] = low[o] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at = g * nb + b;
    const __m512i* hi = x.hi.data() + at * 8;
    const __m512i* lo = x.lo.data() + at * 8;
    const __m512 d = _mm512_loadu_ps(x.d.data() + at * kLaneRows);
    #pragma GCC unroll 2
    for (int span = 0; span < kSpans; ++span) {
      __m512i h[2][P], l[2][P];
      for (int c = 0; c < 2; ++c)
        for (int o = 0; o < P; ++o) h[c][o] = l[c][o] = _mm512_setzero_si512();
      #pragma GCC unroll 8
      for (int j = span * 8 / kSpans; j < (span + 1) * 8 / kSpans; ++j) {
        __m512i vh = _mm512_load_si512(hi + j), vl = _mm512_load_si512(lo + j);
        asm("" : "+v"(vh), "+v"(vl));  // one load each for all P outputs
        #pragma GCC unroll 4
        for (int o = 0; o < P; ++o) {
          const __m512i w = _mm512_set1_epi32(codes[(b * 8 + j) * kLaneRows + o0 + o]);
          h[j & 1][o] = _mm512_dpbusd_epi32(h[j & 1][o], w, vh);
          l[j & 1][o] = _mm512_dpbusd_epi32(l[j & 1][o], w, vl);
        }
      }
      const float* s = (span == 0 ? u.s0.data() : u.s1.data()) + b * kLaneRows + o0;
      const int32_t* sums = L.halves ? x.sum16.data() + (at * 2 + span) * kLaneRows : x.sum.data() + at * kLaneRows;
      #pragma GCC unroll 4
      for (int o = 0; o < P; ++o) {
        const __m512i hs = _mm512_add_epi32(h[0][o], h[1][o]), ls = _mm512_add_epi32(l[0][o], l[1][o]);
        // 254 h = 256 h - 2 h: exact, as in dot2
        __m512i i = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(hs, 8), _mm512_slli_epi32(hs, 1)), ls);
        i = less_offset<L.offset>(i, sums);
        acc[o] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(_mm512_set1_ps(s[o]), d), acc[o]);
      }
    }
    if constexpr (L.has_min) {  // low = sum_b m[b] * ds[b]: its own chain, in block order as in tile()
      const __m512 ds = _mm512_loadu_ps(x.ds.data() + at * kLaneRows);
      for (int o = 0; o < P; ++o) low[o] = _mm512_fmadd_ps(_mm512_set1_ps(u.min[b * kLaneRows + o0 + o]), ds, low[o]);
    }
  }
  for (int o = 0; o < P; ++o) {
    __m512 v = acc[o];
    if constexpr (L.has_min) v = _mm512_add_ps(v, low[o]);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_set1_ps(bias[o0 + o]));
    _mm512_store_ps(y[o0 + o], v);
  }
}

// out[r * ldo + o] = y[o][r] for o < valid, r < 16.
void store_transposed(const float (*y)[kLaneRows], int valid, float* out, int64_t ldo) {
  __m512 r[16];
  for (int o = 0; o < 16; ++o) r[o] = _mm512_load_ps(y[o]);
  transpose16(r);
  const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
  for (int i = 0; i < 16; ++i) _mm512_mask_storeu_ps(out + kColumnOf[i] * ldo, mask, r[i]);
}

// Rows [m, end) (whole groups of 16) against one tile through row lanes: its codes unpacked
// once, then every group's passes; `next_bytes` of the following tile are prefetched meanwhile.
// Returns end.
template <QType QT>
int64_t row_lane_rows(const RowLaneActivations& x, int64_t m, int64_t end, const TileBytes& t, int64_t nb,
                      int64_t next_bytes, float* out, int64_t ldo, int valid, const float* bias) {
  UnpackedTile& u = thread_unpacked_tile();
  unpack_tile<QT>(t, nb, next_bytes, u);
  alignas(64) float y[kLaneRows][kLaneRows] = {};  // outputs past the tile's last pass stay defined
  for (; m + kLaneRows <= end; m += kLaneRows) {
    for (int o0 = 0; o0 < valid; o0 += kPassOutputs) row_lane_pass<QT>(x, m / kLaneRows, nb, u, o0, bias, y);
    store_transposed(y, valid, out + m * ldo, ldo);
  }
  return m;
}

#endif

#if defined(ASTRAI_ISA_AVX512)
using WideLanes = isa::Lanes16;
constexpr int kTileRows = 8;
#else
using WideLanes = Lanes8;
constexpr int kTileRows = 4;
#endif

// Rows [mc, mend) of activations against one tile of output rows, in row tiles of kTileRows.
template <QType QT, class V>
void tile_rows(const QuantizedActivations& a, int64_t mc, int64_t mend, const TileBytes& t, int64_t nb, float* out,
               int64_t ldo, int valid, const float* bias) {
  int64_t m = mc;
#if defined(ASTRAI_ISA_AMX)
  if constexpr (V::kGroups == 2)  // whole tiles of 16 activation rows through AMX
    for (; m + 16 <= mend; m += 16) amx_tile<QT>(a, m, t, nb, out, ldo, valid, bias);
#endif
  for (; m + kTileRows <= mend; m += kTileRows) tile<QT, V, kTileRows>(a, m, t, nb, out, ldo, valid, bias);
  switch (mend - m) {
    case 7: tile<QT, V, 7>(a, m, t, nb, out, ldo, valid, bias); break;
    case 6: tile<QT, V, 6>(a, m, t, nb, out, ldo, valid, bias); break;
    case 5: tile<QT, V, 5>(a, m, t, nb, out, ldo, valid, bias); break;
    case 4: tile<QT, V, 4>(a, m, t, nb, out, ldo, valid, bias); break;
    case 3: tile<QT, V, 3>(a, m, t, nb, out, ldo, valid, bias); break;
    case 2: tile<QT, V, 2>(a, m, t, nb, out, ldo, valid, bias); break;
    case 1: tile<QT, V, 1>(a, m, t, nb, out, ldo, valid, bias); break;
    default: break;
  }
}

// Calls of at most kStealMaxRows rows (decode and verification steps) go through
// parallel_for_stealing in kPiecesPerThread pieces per thread: a thread the OS preempts then
// holds the call up by one piece, not by its whole share. Larger calls keep one contiguous share
// per thread, since every piece rereads all rows' activations.
constexpr int64_t kStealMaxRows = 256;
constexpr int64_t kPiecesPerThread = 8;

template <QType QT, class V>
void gemm_with(const QuantizedActivations& a, const uint8_t* packed, int64_t N, float* out, int64_t ldo, const float* bias) {
  const PackedRegions reg = packed_regions(QT, N, a.K);
  const int64_t M = a.M, nb = reg.blocks;
  // A tile is V::kGroups groups; the last one may be a single (narrow) group.
  constexpr int64_t G = V::kGroups;
  const int64_t tiles = (reg.groups + G - 1) / G;
  // A task should outweigh the team's fork/join (~2 us): at least ~256 group-block-rows.
  const int64_t grain = std::max<int64_t>(1, 256 / std::max<int64_t>(1, nb * M * G));
  // Activation rows per pass over a thread's tiles: 64 rows of K int8 stay in L1/L2 while the
  // tiles' weights stream past them.
  constexpr int64_t kRowChunk = ASTRAI_QLINEAR_ROW_CHUNK;
  // Rows [0, lane_rows) in whole groups of 16 go through row lanes where the build has them.
#if defined(ASTRAI_QLINEAR_ROW_LANES)
  constexpr bool kRowLanes = G == 2 && QT != QType::Q8_0;  // two-group tiles of the nibble/plane types
  int64_t lane_rows = 0;
  const RowLaneActivations* lanes = nullptr;
  if constexpr (kRowLanes) {
    if (M >= kLaneMinRows && nb <= kLaneMaxBlocks) {
      lane_rows = M / kLaneRows * kLaneRows;
      RowLaneActivations& x = thread_row_lanes();
      transpose_rows(a, lane_rows / kLaneRows, x);
      lanes = &x;
    }
  }
#endif
  const auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t mc = 0; mc < M; mc += kRowChunk) {
      const int64_t mend = std::min(M, mc + kRowChunk);
      for (int64_t tt = t0; tt < t1; ++tt) {
        const int64_t g = tt * G;
        const TileBytes t{packed + reg.quants + g * reg.quant_group, packed + reg.scales + g * reg.scale_group,
                          packed + reg.super + g * reg.super_group, reg.quant_group, reg.scale_group, reg.super_group};
        const int64_t n0 = g * kRowsPerGroup;
        const int valid = static_cast<int>(std::min<int64_t>(G * kRowsPerGroup, N - n0));
        const float* tbias = bias != nullptr ? bias + n0 : nullptr;
        if (G == 1 || g + 1 < reg.groups) {
          int64_t m = mc;
#if defined(ASTRAI_QLINEAR_ROW_LANES)
          if constexpr (kRowLanes) {
            if (mc < lane_rows) {
              const int64_t next = tt + 1 < t1 && g + 3 < reg.groups ? G * reg.quant_group : 0;
              m = row_lane_rows<QT>(*lanes, mc, std::min(mend, lane_rows), t, nb, next, out + n0, ldo, valid, tbias);
            }
          }
#endif
          if (m < mend) tile_rows<QT, V>(a, m, mend, t, nb, out + n0, ldo, valid, tbias);
        } else {
          tile_rows<QT, Lanes8>(a, mc, mend, t, nb, out + n0, ldo, valid, tbias);
        }
      }
    }
  };
  if (M <= kStealMaxRows) {
    parallel_for_stealing(0, tiles, std::max<int64_t>(grain, tiles / (num_threads() * kPiecesPerThread)), run);
  } else {
    parallel_for(0, tiles, grain, run);
  }
}

// Up to this many activation rows a call is bound by reading the weights once: one group per
// tile then keeps each thread's weights a single sequential stream, which the prefetchers follow
// better than a wide tile's two. Results are bit-identical either way (lanes.h).
constexpr int64_t kNarrowTileMaxRows = 2;

template <QType QT>
void gemm(const QuantizedActivations& a, const uint8_t* packed, int64_t N, float* out, int64_t ldo, const float* bias) {
  if constexpr (WideLanes::kGroups > 1) {
    if (a.M <= kNarrowTileMaxRows) return gemm_with<QT, Lanes8>(a, packed, N, out, ldo, bias);
  }
  gemm_with<QT, WideLanes>(a, packed, N, out, ldo, bias);
}

void check_activations_input(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu(), what, ": x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat, what, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2, what, ": x must be 2-D [M, K], got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), what, ": x must be contiguous (call .contiguous() first)");
  TORCH_CHECK(x.size(1) > 0 && x.size(1) % kQBlock == 0, what, ": in_features K must be a positive multiple of 32, got ", x.size(1));
}

}  // namespace

int64_t activation_storage_bytes(int64_t M, int64_t K) {
  return 4 * M * K + 20 * M * (K / kQBlock);
}

QuantizedActivations quantize_activations(const at::Tensor& x) {
  check_activations_input(x, "quantize_activations");
  return quantize_activations(x, at::empty({activation_storage_bytes(x.size(0), x.size(1))}, x.options().dtype(at::kByte)));
}

QuantizedActivations quantize_activations(const at::Tensor& x, const at::Tensor& storage) {
  check_activations_input(x, "quantize_activations");
  TORCH_CHECK(storage.device().is_cpu() && storage.scalar_type() == at::kByte && storage.is_contiguous() &&
                  storage.numel() >= activation_storage_bytes(x.size(0), x.size(1)) &&
                  reinterpret_cast<uintptr_t>(storage.data_ptr()) % 4 == 0,
              "quantize_activations: storage must be a contiguous, 4-byte aligned uint8 CPU tensor of at least ",
              activation_storage_bytes(x.size(0), x.size(1)), " bytes");
  QuantizedActivations a;
  a.M = x.size(0);
  a.K = x.size(1);
  const int64_t M = a.M, K = a.K, nb = K / kQBlock;
  // planar: q_hi [M*K] | q_lo [M*K] | a [M*K] int16 | d [M*nb] | ds [M*nb] | sum [M*nb] |
  // sum16 [M*2nb]; M*K is a multiple of 32, so all aligned.
  a.storage = storage;
  uint8_t* base = a.storage.data_ptr<uint8_t>();
  int8_t* q_hi = reinterpret_cast<int8_t*>(base);
  int8_t* q_lo = q_hi + M * K;
  int16_t* a16 = reinterpret_cast<int16_t*>(base + 2 * M * K);
  float* d = reinterpret_cast<float*>(base + 4 * M * K);
  float* ds = d + M * nb;
  int32_t* sum = reinterpret_cast<int32_t*>(ds + M * nb);
  int32_t* sum16 = sum + M * nb;
  a.q_hi = q_hi;
  a.q_lo = q_lo;
  a.a = a16;
  a.d = d;
  a.ds = ds;
  a.sum = sum;
  a.sum16 = sum16;
  const float* src = x.data_ptr<float>();
  // Quantizing a row costs ~K/4 ns: only rows worth ~16k elements per task go to the team.
  const int64_t grain = std::max<int64_t>(1, 16384 / K);
  parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      quantize_row(src + r * K, nb,
                   ActivationRow{q_hi + r * K, q_lo + r * K, a16 + r * K, d + r * nb, ds + r * nb, sum + r * nb,
                                 sum16 + 2 * r * nb});
  });
  return a;
}

void qlinear_out(const QuantizedActivations& x, const at::Tensor& packed, QType qtype, int64_t N, int64_t K,
                 const std::optional<at::Tensor>& bias, at::Tensor& out) {
  TORCH_CHECK(x.K == K, "qlinear: x has ", x.K, " features, the weight expects in_features=", K);
  check_packed(packed, qtype, N, K, "qlinear");
  const float* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == N &&
                    bias->is_contiguous(),
                "qlinear: bias must be a contiguous float32 CPU tensor of shape [", N, "], got ", bias->scalar_type(), " ",
                bias->sizes());
    bias_ptr = bias->data_ptr<float>();
  }
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.dim() == 2 && out.size(0) == x.M &&
                  out.size(1) == N && (out.stride(1) == 1 || N == 1) && out.stride(0) >= N,
              "qlinear: out must be a float32 CPU tensor [", x.M, ", ", N, "] with unit column stride, got ",
              out.scalar_type(), " ", out.sizes(), " strides ", out.strides());
  if (x.M == 0) return;
  const uint8_t* w = packed.data_ptr<uint8_t>();
  float* y = out.data_ptr<float>();
  const int64_t ldo = out.stride(0);
  switch (qtype) {
    case QType::Q4_0: gemm<QType::Q4_0>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q4_1: gemm<QType::Q4_1>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q5_0: gemm<QType::Q5_0>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q5_1: gemm<QType::Q5_1>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q8_0: gemm<QType::Q8_0>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q3_K: gemm<QType::Q3_K>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q4_K: gemm<QType::Q4_K>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q5_K: gemm<QType::Q5_K>(x, w, N, y, ldo, bias_ptr); break;
    case QType::Q6_K: gemm<QType::Q6_K>(x, w, N, y, ldo, bias_ptr); break;
  }
}

at::Tensor qlinear(const at::Tensor& x, const at::Tensor& packed, QType qtype, int64_t N, int64_t K,
                   const std::optional<at::Tensor>& bias, std::optional<at::Tensor> out) {
  check_activations_input(x, "qlinear");
  TORCH_CHECK(x.size(1) == K, "qlinear: x has ", x.size(1), " features, the weight expects in_features=", K);
  at::Tensor y = out.has_value() ? *out : at::empty({x.size(0), N}, x.options());
  const QuantizedActivations a = quantize_activations(x);
  qlinear_out(a, packed, qtype, N, K, bias, y);
  return y;
}

}  // namespace astrai
