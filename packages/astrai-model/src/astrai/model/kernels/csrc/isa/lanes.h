// Per-instruction-set vector helpers of the quantized linear kernels (qlinear.cpp), which are
// written once against them. A "lanes" type covers whole groups of 8 output rows of the packed
// layout (packed_layout.h): 32-bit lane r holds row r's 4 consecutive weights of a weight vector.
//
//   Lanes8   AVX2: one group per 256-bit vector. int8 dot products by maddubs (u8 x s8 pairs
//            into int16, summed in int16 while the weights' range leaves headroom) and madd.
//   Lanes16  AVX-512 (BW/VL/VNNI): two consecutive groups per 512-bit vector; one vpdpbusd per
//            4-product dot, and vpdpwssd for Q8_0's int16 products.
//
// Every integer dot product is exact, and the float operations per output row are the same
// sequence on every lanes type, so all variants give bit-identical results.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace astrai::isa {

inline int32_t load4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline int64_t load8(const void* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

struct Lanes8 {
  static constexpr int kGroups = 1;
  static constexpr int kRows = 8;
  using I = __m256i;
  using F = __m256;

  // 32 bytes at p of the covered group (`group_stride`: bytes to the next group, unused here).
  static I load(const uint8_t* p, int64_t) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static I splat8(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
  static I splat32(int32_t v) { return _mm256_set1_epi32(v); }
  static I zero() { return _mm256_setzero_si256(); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I sub32(I a, I b) { return _mm256_sub_epi32(a, b); }
  // Shift every 16-bit lane by s bits (s > 0 left, s < 0 right): callers mask the bits they keep.
  template <int S>
  static I shift16(I v) {
    if constexpr (S > 0) return _mm256_slli_epi16(v, S);
    else if constexpr (S < 0) return _mm256_srli_epi16(v, -S);
    else return v;
  }

  // 254 * sum_j (w[j] . xh[4j..4j+3]) + sum_j (w[j] . xl[4j..4j+3]) over j in [J0, J1), per lane.
  // Weights are unsigned codes <= kMaxCode; a maddubs pair is <= 2*127*kMaxCode, so R of them
  // fit an int16 lane before madd widens them.
  template <int kMaxCode, int J0, int J1>
  static I dot2(const I* w, const int8_t* xh, const int8_t* xl) {
    constexpr int R = std::min(8, 32767 / (254 * kMaxCode));
    const __m256i k254 = _mm256_set1_epi16(254), ones = _mm256_set1_epi16(1);
    __m256i total = _mm256_setzero_si256();
    #pragma GCC unroll 8
    for (int j = J0; j < J1; j += R) {
      __m256i h = _mm256_maddubs_epi16(w[j], _mm256_set1_epi32(load4(xh + 4 * j)));
      __m256i l = _mm256_maddubs_epi16(w[j], _mm256_set1_epi32(load4(xl + 4 * j)));
      for (int k = j + 1; k < std::min(j + R, J1); ++k) {
        h = _mm256_add_epi16(h, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(load4(xh + 4 * k))));
        l = _mm256_add_epi16(l, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(load4(xl + 4 * k))));
      }
      total = _mm256_add_epi32(total, _mm256_add_epi32(_mm256_madd_epi16(h, k254), _mm256_madd_epi16(l, ones)));
    }
    return total;
  }

  // Q8_0: sum_k w[r][k] * a[k] over one block of 32 (int8 weights, exact int16 activations), per
  // lane in q8 lane order (rows 0,1,4,5,2,3,6,7: what hadd leaves; q8_order maps scales there and
  // q8_restore maps results back).
  static I dot_q8(const uint8_t* q, int64_t, const int16_t* a) {
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    #pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m128i* src = reinterpret_cast<const __m128i*>(q + 32 * c);
      const __m256i x = _mm256_set1_epi64x(load8(a + 4 * c));  // a[4c..4c+3]
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(src)), x));      // rows 0-3
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(src + 1)), x));  // rows 4-7
    }
    return _mm256_hadd_epi32(lo, hi);
  }
  static __m256i q8_permutation() { return _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7); }  // its own inverse
  static F q8_order(F v) { return _mm256_permutevar8x32_ps(v, q8_permutation()); }
  static F q8_restore(F v) { return _mm256_permutevar8x32_ps(v, q8_permutation()); }

  static F fzero() { return _mm256_setzero_ps(); }
  static F fset1(float v) { return _mm256_set1_ps(v); }
  static F cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F neg(F v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }
  // 8 fp16 / uint8 / int8 per group at p, as float32.
  static F f16(const uint8_t* p, int64_t) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static F u8(const uint8_t* p, int64_t) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))); }
  static F i8(const uint8_t* p, int64_t) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))); }

  // out[0 .. valid) = v (+ bias)
  static void store(float* out, F v, int valid, const float* bias) {
    if (valid == kRows) {
      if (bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
      _mm256_storeu_ps(out, v);
      return;
    }
    alignas(32) float tmp[kRows];
    _mm256_store_ps(tmp, v);
    for (int r = 0; r < valid; ++r) out[r] = bias != nullptr ? tmp[r] + bias[r] : tmp[r];
  }
};

#if defined(ASTRAI_ISA_AVX512)
struct Lanes16 {
  static constexpr int kGroups = 2;
  static constexpr int kRows = 16;
  using I = __m512i;
  using F = __m512;

  // 32 bytes at p of the first group and at p + group_stride of the second, one vector.
  static I load(const uint8_t* p, int64_t group_stride) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + group_stride)), 1);
  }
  static I splat8(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }
  static I splat32(int32_t v) { return _mm512_set1_epi32(v); }
  static I zero() { return _mm512_setzero_si512(); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I sub32(I a, I b) { return _mm512_sub_epi32(a, b); }
  template <int S>
  static I shift16(I v) {
    if constexpr (S > 0) return _mm512_slli_epi16(v, S);
    else if constexpr (S < 0) return _mm512_srli_epi16(v, -S);
    else return v;
  }

  template <int kMaxCode, int J0, int J1>
  static I dot2(const I* w, const int8_t* xh, const int8_t* xl) {
    // two chains per part, even and odd j, so consecutive dot products need not wait for each
    // other (integer sums: exact in any order)
    __m512i h[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    __m512i l[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    #pragma GCC unroll 8
    for (int j = J0; j < J1; ++j) {
      h[j & 1] = _mm512_dpbusd_epi32(h[j & 1], w[j], _mm512_set1_epi32(load4(xh + 4 * j)));
      l[j & 1] = _mm512_dpbusd_epi32(l[j & 1], w[j], _mm512_set1_epi32(load4(xl + 4 * j)));
    }
    const __m512i hs = _mm512_add_epi32(h[0], h[1]);
    const __m512i ls = _mm512_add_epi32(l[0], l[1]);
    // 254 h = 256 h - 2 h: exact (|h| <= 32 * 63 * 127)
    return _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(hs, 8), _mm512_slli_epi32(hs, 1)), ls);
  }

  // Q8_0 in row order: int8 weights widened to int16 (lane 2r+p of a group's vector = row r,
  // weights 4c+2p, 4c+2p+1) times the activation quad, vpdpwssd over the 8 chunks; then the
  // two lanes of each row summed, both groups in one vector.
  static I dot_q8(const uint8_t* q, int64_t group_stride, const int16_t* a) {
    __m512i g0 = _mm512_setzero_si512(), g1 = _mm512_setzero_si512();
    #pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m512i x = _mm512_set1_epi64(load8(a + 4 * c));
      g0 = _mm512_dpwssd_epi32(g0, _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * c))), x);
      g1 = _mm512_dpwssd_epi32(g1, _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + group_stride + 32 * c))), x);
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_epi32(_mm512_permutex2var_epi32(g0, even, g1), _mm512_permutex2var_epi32(g0, odd, g1));
  }
  static F q8_order(F v) { return v; }
  static F q8_restore(F v) { return v; }

  static F fzero() { return _mm512_setzero_ps(); }
  static F fset1(float v) { return _mm512_set1_ps(v); }
  static F cvt(I v) { return _mm512_cvtepi32_ps(v); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F neg(F v) { return _mm512_xor_ps(v, _mm512_set1_ps(-0.0f)); }
  static F f16(const uint8_t* p, int64_t group_stride) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + group_stride));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
  }
  static __m128i bytes16(const uint8_t* p, int64_t group_stride) {
    return _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + group_stride)));
  }
  static F u8(const uint8_t* p, int64_t group_stride) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes16(p, group_stride))); }
  static F i8(const uint8_t* p, int64_t group_stride) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes16(p, group_stride))); }

  static void store(float* out, F v, int valid, const float* bias) {
    const __mmask16 mask = valid >= kRows ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias));
    _mm512_mask_storeu_ps(out, mask, v);
  }
};
#endif

}  // namespace astrai::isa
