// AVX2 + FMA + F16C building blocks shared by the attention and fused-op kernels: a vector exp
// and exp2 written once over a vector-width type (F8; F16 in the avx512 build), horizontal
// reductions, and loads/stores that convert float16 / bfloat16 <-> float32 exactly as torch does
// (round to nearest even; bfloat16 NaN -> 0x7fc0).
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

// Float lanes at one vector width, for elementwise algorithms written once (exp_lanes,
// exp2_nonpositive_lanes) that must run the same operations per lane at every width, so every
// width gives the same results.
struct F8 {
  using V = __m256;
  using VI = __m256i;
  using Mask = __m256;  // all-ones lanes
  static constexpr int kLanes = 8;
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V neg(V v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V round_nearest(V v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static VI to_int(V v) { return _mm256_cvtps_epi32(v); }
  static VI half(VI n) { return _mm256_srai_epi32(n, 1); }
  static VI sub_int(VI a, VI b) { return _mm256_sub_epi32(a, b); }
  // 2^e for e in [-126, 127]
  static V pow2(VI e) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23)); }
  static Mask greater(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static Mask less(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static Mask is_nan(V v) { return _mm256_cmp_ps(v, v, _CMP_UNORD_Q); }
  static V zero_where(Mask m, V v) { return _mm256_andnot_ps(m, v); }
  static V select(Mask m, V if_set, V otherwise) { return _mm256_blendv_ps(otherwise, if_set, m); }
};

#if defined(ASTRAI_ISA_AVX512)
struct F16 {
  using V = __m512;
  using VI = __m512i;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V neg(V v) { return _mm512_xor_ps(v, _mm512_set1_ps(-0.0f)); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V round_nearest(V v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static VI to_int(V v) { return _mm512_cvtps_epi32(v); }
  static VI half(VI n) { return _mm512_srai_epi32(n, 1); }
  static VI sub_int(VI a, VI b) { return _mm512_sub_epi32(a, b); }
  static V pow2(VI e) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23)); }
  static Mask greater(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static Mask less(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static Mask is_nan(V v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }
  static V zero_where(Mask m, V v) { return _mm512_maskz_mov_ps(static_cast<__mmask16>(~m), v); }
  static V select(Mask m, V if_set, V otherwise) { return _mm512_mask_mov_ps(otherwise, m, if_set); }
};
#endif

// exp(x) for float32 lanes, within ~2 ulp of the exact value: Cephes' range reduction
// (x = n ln2 + r, |r| <= ln2/2) and degree-6 polynomial. exp(-inf) and anything below
// -87.34 give 0, anything above 88.72 gives +inf, NaN stays NaN.
template <class W>
inline typename W::V exp_lanes(typename W::V x) {
  using V = typename W::V;
  const V max_x = W::set1(88.72283935546875f);
  const V min_x = W::set1(-87.33654022216797f);
  const auto big = W::greater(x, max_x);
  const auto tiny = W::less(x, min_x);
  const auto nan = W::is_nan(x);
  const V xc = W::min(W::max(x, min_x), max_x);

  const V n = W::round_nearest(W::mul(xc, W::set1(1.44269504088896341f)));
  V r = W::fnmadd(n, W::set1(0.693359375f), xc);
  r = W::fnmadd(n, W::set1(-2.12194440e-4f), r);

  V p = W::set1(1.9875691500e-4f);
  p = W::fmadd(p, r, W::set1(1.3981999507e-3f));
  p = W::fmadd(p, r, W::set1(8.3334519073e-3f));
  p = W::fmadd(p, r, W::set1(4.1665795894e-2f));
  p = W::fmadd(p, r, W::set1(1.6666665459e-1f));
  p = W::fmadd(p, r, W::set1(5.0000001201e-1f));
  const V r2 = W::mul(r, r);
  p = W::fmadd(p, r2, W::add(r, W::set1(1.0f)));

  // 2^n in two halves so n = 128 (x near 88.72) still scales without overflowing the exponent.
  const auto ni = W::to_int(n);
  const auto half = W::half(ni);
  V y = W::mul(W::mul(p, W::pow2(half)), W::pow2(W::sub_int(ni, half)));

  y = W::zero_where(tiny, y);
  y = W::select(big, W::set1(__builtin_inff()), y);
  return W::select(nan, x, y);
}

inline __m256 exp_ps(__m256 x) { return exp_lanes<F8>(x); }

// 2^x for x <= 0 (softmax weights in base 2), within ~1 ulp; -inf and anything below -126
// give 0. Inputs above 0 are not supported (the caller subtracts a running maximum).
template <class W>
inline typename W::V exp2_nonpositive_lanes(typename W::V x) {
  using V = typename W::V;
  const V min_x = W::set1(-126.0f);
  const auto tiny = W::less(x, min_x);
  x = W::max(x, min_x);
  const V n = W::round_nearest(x);
  const V r = W::sub(x, n);  // exact, in [-0.5, 0.5]
  // near-minimax polynomial for 2^r on [-0.5, 0.5] (relative error 2e-9 before rounding)
  V p = W::set1(0.000153458124f);
  p = W::fmadd(p, r, W::set1(0.00133999309f));
  p = W::fmadd(p, r, W::set1(0.00961848907f));
  p = W::fmadd(p, r, W::set1(0.0555032864f));
  p = W::fmadd(p, r, W::set1(0.240226462f));
  p = W::fmadd(p, r, W::set1(0.693147182f));
  p = W::fmadd(p, r, W::set1(1.0f));
  return W::zero_where(tiny, W::mul(p, W::pow2(W::to_int(n))));
}

inline __m256 exp2_nonpositive(__m256 x) { return exp2_nonpositive_lanes<F8>(x); }

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
