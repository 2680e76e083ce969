// AVX2 + FMA + F16C building blocks shared by the attention and fused-op kernels: a vector exp,
// horizontal reductions, and loads/stores that convert float16 / bfloat16 <-> float32 exactly as
// torch does (round to nearest even; bfloat16 NaN -> 0x7fc0).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace astrai::simd {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The eight horizontal sums of a[0..7] as one vector: {sum(a[0]), ..., sum(a[7])}.
inline __m256 hsum8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]);
  const __m256 h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]);
  const __m256 h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23);  // lane halves: [s0 s1 s2 s3] low / high parts
  const __m256 h4567 = _mm256_hadd_ps(h45, h67);
  const __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
  return _mm256_add_ps(lo, hi);
}

// A value the compiler must materialise: stops -ffp-contract=fast from fusing a multiply into a
// following add, where a kernel promises torch's separately rounded mul-then-add.
inline __m256 opaque(__m256 v) {
  asm("" : "+x"(v));
  return v;
}
inline float opaque(float v) {
  asm("" : "+x"(v));
  return v;
}

// Pull one cache line towards L1 / into L2. Volatile asm, not _mm_prefetch: GCC's IPA treats a
// function that only prefetches as pure and deletes its calls.
inline void prefetch_l1(const void* p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }
inline void prefetch_l2(const void* p) { asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }

// exp(x) for float32 lanes, within ~2 ulp of the exact value: Cephes' range reduction
// (x = n ln2 + r, |r| <= ln2/2) and degree-6 polynomial. exp(-inf) and anything below
// -87.34 give 0, anything above 88.72 gives +inf, NaN stays NaN.
inline __m256 exp_ps(__m256 x) {
  const __m256 max_x = _mm256_set1_ps(88.72283935546875f);
  const __m256 min_x = _mm256_set1_ps(-87.33654022216797f);
  const __m256 big = _mm256_cmp_ps(x, max_x, _CMP_GT_OQ);
  const __m256 tiny = _mm256_cmp_ps(x, min_x, _CMP_LT_OQ);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, min_x), max_x);

  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);

  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));

  // 2^n in two halves so n = 128 (x near 88.72) still scales without overflowing the exponent.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);

  y = _mm256_andnot_ps(tiny, y);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), big);
  return _mm256_blendv_ps(y, x, nan);
}

#if defined(ASTRAI_ISA_AVX512)
// exp_ps on 16 lanes: the same operations per lane, so the same results.
inline __m512 exp_ps(__m512 x) {
  const __m512 max_x = _mm512_set1_ps(88.72283935546875f);
  const __m512 min_x = _mm512_set1_ps(-87.33654022216797f);
  const __mmask16 big = _mm512_cmp_ps_mask(x, max_x, _CMP_GT_OQ);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, min_x, _CMP_LT_OQ);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  __m512 xc = _mm512_min_ps(_mm512_max_ps(x, min_x), max_x);

  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);

  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));

  const __m512i ni = _mm512_cvtps_epi32(n);
  const __m512i half = _mm512_srai_epi32(ni, 1);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(half, _mm512_set1_epi32(127)), 23));
  const __m512 s2 = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, half), _mm512_set1_epi32(127)), 23));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);

  y = _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), y);
  y = _mm512_mask_mov_ps(y, big, _mm512_set1_ps(__builtin_inff()));
  return _mm512_mask_mov_ps(y, nan, x);
}
#endif

// 2^x for x <= 0 (softmax weights in base 2), within ~1 ulp; -inf and anything below -126
// give 0. Inputs above 0 are not supported (the caller subtracts a running maximum).
inline __m256 exp2_nonpositive(__m256 x) {
  const __m256 min_x = _mm256_set1_ps(-126.0f);
  const __m256 tiny = _mm256_cmp_ps(x, min_x, _CMP_LT_OQ);
  x = _mm256_max_ps(x, min_x);
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(x, n);  // exact, in [-0.5, 0.5]
  // near-minimax polynomial for 2^r on [-0.5, 0.5] (relative error 2e-9 before rounding)
  __m256 p = _mm256_set1_ps(0.000153458124f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.00133999309f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.00961848907f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.0555032864f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.240226462f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.693147182f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// ---- float16 / bfloat16 <-> float32 ----

inline __m256 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 load_bf16(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

inline void store_f16(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

inline void store_bf16(uint16_t* p, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc0), nan);
  // 32 -> 16 bits: packus works per 128-bit lane, then gather the two useful quadwords.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, sizeof bits);
  if (f != f) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

}  // namespace astrai::simd
