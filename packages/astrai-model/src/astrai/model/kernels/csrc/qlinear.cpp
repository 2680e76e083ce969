// AVX2 low-bit linear kernels over weights repacked from GGUF Q4_0 / Q4_1 / Q8_0 blocks.
// Layout and arithmetic: see qlinear.h. One kernel serves every M: a group of 8 output rows is
// unpacked once per block into 8 registers (32-bit lane r = row r, 4 consecutive k) and reused
// for up to 4 activation rows, whose 4-byte slices are broadcast to all lanes, so the int8 dot
// products (maddubs + madd) need no horizontal sums and the scales of 8 rows apply in one FMA.
// Q8_0 instead widens its int8 weights to int16 and multiplies the exact int16 activations
// (a = 254*q_hi + q_lo) with one madd per chunk: 2 multiplies per 32 products instead of 4.
#include "qlinear.h"

#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "avx2_math.h"
#include "parallel.h"

#ifndef ASTRAI_OPS  // the torch op namespace; a development build of variants side by side renames it
#define ASTRAI_OPS astrai
#endif
#ifndef ASTRAI_QLINEAR_ROW_CHUNK
#define ASTRAI_QLINEAR_ROW_CHUNK 64
#endif
#ifndef ASTRAI_QLINEAR_TILE_ROWS
#define ASTRAI_QLINEAR_TILE_ROWS 4
#endif
#ifndef ASTRAI_QLINEAR_PREFETCH
#define ASTRAI_QLINEAR_PREFETCH 1024
#endif

namespace astrai {

int64_t quant_bytes_per_group_block(QType qtype) {
  return qtype == QType::Q8_0 ? 256 : 128;
}

int64_t scale_bytes_per_group_block(QType qtype) {
  return qtype == QType::Q4_1 ? 32 : 16;
}

int64_t packed_nbytes(QType qtype, int64_t N, int64_t K) {
  const int64_t groups = (N + kRowsPerGroup - 1) / kRowsPerGroup;
  return groups * (K / kQBlock) * (quant_bytes_per_group_block(qtype) + scale_bytes_per_group_block(qtype));
}

namespace {

QType checked_qtype(int64_t id) {
  TORCH_CHECK(id == 2 || id == 3 || id == 8, "qlinear: unsupported quantization type id ", id,
              " (supported GGML types: Q4_0=2, Q4_1=3, Q8_0=8)");
  return static_cast<QType>(id);
}

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline int32_t hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// Blocks whose amax is below this are zero: it keeps 1/d finite and d a normal float.
constexpr float kTinyBlock = 0x1p-110f;

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
void quantize_row(const float* x, int64_t nb, int8_t* q_hi, int8_t* q_lo, int16_t* a16, float* d, float* ds,
                  int32_t* sum) {
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
      std::memset(q_hi + b * kQBlock, 0, kQBlock);
      std::memset(q_lo + b * kQBlock, 0, kQBlock);
      std::memset(a16 + b * kQBlock, 0, kQBlock * sizeof(int16_t));
      d[b] = 0.0f;
      ds[b] = 0.0f;
      sum[b] = 0;
      continue;
    }
    const float d_hi = amax / 127.0f;
    const float d_lo = d_hi / 254.0f;
    const __m256 vd_hi = _mm256_set1_ps(d_hi);
    const __m256 inv_hi = _mm256_set1_ps(1.0f / d_hi);
    const __m256 inv_lo = _mm256_set1_ps(1.0f / d_lo);
    __m256i hi[4], lo[4], whole[4];
    __m256i total = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      hi[j] = clamp127(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv_hi)));
      // fma: x - q_hi*d_hi rounded once; |r| <= d_hi/2, so r/d is within [-127, 127] but for rounding.
      const __m256 r = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(hi[j]), vd_hi, v[j]);
      lo[j] = clamp127(_mm256_cvtps_epi32(_mm256_mul_ps(r, inv_lo)));
      whole[j] = _mm256_add_epi32(_mm256_mullo_epi32(hi[j], k254), lo[j]);  // |a| <= 32385
      total = _mm256_add_epi32(total, whole[j]);
    }
    for (int j = 0; j < 2; ++j) {  // int32 -> int16 in element order (packs interleave 128-bit lanes)
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(whole[2 * j], whole[2 * j + 1]), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a16 + b * kQBlock + 16 * j), packed);
    }
    store_int8(hi, q_hi + b * kQBlock);
    store_int8(lo, q_lo + b * kQBlock);
    const int32_t block_sum = hsum8(total);  // |sum| <= 32 * 32385
    d[b] = d_lo;
    sum[b] = block_sum;
    ds[b] = d_lo * static_cast<float>(block_sum);
  }
}

// Lane order of _mm256_hadd_epi32(rows 0-3 pairs, rows 4-7 pairs): rows 0,1,4,5,2,3,6,7. As a
// permutation it is its own inverse, so it both orders the scales and restores row order.
inline __m256i hadd_row_order() { return _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7); }

// Activation rows m0..m0+MT-1 against one group of 8 output rows over all nb blocks. Per row and
// block the two activation parts take two exact dot products that share the unpacked weights:
// i = 254 * (w . q_hi) + (w . q_lo), the 254 applied by the madd that widens q_hi's int16 sums.
// Register budget (16 ymm): 8 weight registers, MT accumulators, two int16 sums and a broadcast
// temporary; Q4_1's min term is a second, light pass so its accumulators do not compete.
template <QType QT, int MT>
inline void group_tile(const QuantizedActivations& a, int64_t m0, const uint8_t* quants, const uint8_t* scales,
                       int64_t nb, float* out, int64_t ldo, int64_t valid_rows, const float* bias) {
  constexpr int64_t QB = QT == QType::Q8_0 ? 256 : 128;
  constexpr int64_t SB = QT == QType::Q4_1 ? 32 : 16;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i k254 = _mm256_set1_epi16(254);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const int64_t K = a.K;
  const int8_t* xh = a.q_hi + m0 * K;
  const int8_t* xl = a.q_lo + m0 * K;
  const float* xd = a.d + m0 * nb;
  __m256 acc[MT];
  for (int t = 0; t < MT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qb = quants + b * QB;
    const uint8_t* sb = scales + b * SB;
    if constexpr (ASTRAI_QLINEAR_PREFETCH > 0) {
      // The weights stream from DRAM once per call: ask for them well before they are needed
      // (the hardware prefetcher alone left ~20-30% of a core's bandwidth unused at one row).
      for (int64_t line = 0; line < QB; line += 64) _mm_prefetch(reinterpret_cast<const char*>(qb + ASTRAI_QLINEAR_PREFETCH + line), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(sb + ASTRAI_QLINEAR_PREFETCH * SB / QB), _MM_HINT_T0);
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sb)));
    if constexpr (QT == QType::Q8_0) {
      // int8 weights times the exact int16 activations a = 254*q_hi + q_lo with madd: half the
      // multiplies of two maddubs passes (and no sign tricks). Each 32-byte chunk c widens to
      // rows 0-3 and rows 4-7 (lane pairs (r, k 4c..4c+1), (r, k 4c+2..4c+3)) against a[4c..4c+3]
      // broadcast as one quadword; per lane |sum| <= 16*128*32385 < 2^31. The block's hadd leaves
      // rows in the order 0,1,4,5,2,3,6,7, so the scales are permuted to match and the result is
      // permuted back at the end: the same integers and float operations per row as ever.
      const __m256 dwp = _mm256_permutevar8x32_ps(dw, hadd_row_order());
      const int16_t* xa = a.a + m0 * K + b * kQBlock;
      __m256i lo[MT], hi[MT];
      for (int t = 0; t < MT; ++t) lo[t] = hi[t] = _mm256_setzero_si256();
      for (int c = 0; c < 8; ++c) {
        const __m128i* src = reinterpret_cast<const __m128i*>(qb + 32 * c);
        const __m256i w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(src));
        const __m256i w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(src + 1));
        for (int t = 0; t < MT; ++t) {
          int64_t quad;
          std::memcpy(&quad, xa + t * K + 4 * c, 8);
          const __m256i x = _mm256_set1_epi64x(quad);
          lo[t] = _mm256_add_epi32(lo[t], _mm256_madd_epi16(w_lo, x));
          hi[t] = _mm256_add_epi32(hi[t], _mm256_madd_epi16(w_hi, x));
        }
      }
      for (int t = 0; t < MT; ++t) {
        const __m256i sum = _mm256_hadd_epi32(lo[t], hi[t]);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dwp, _mm256_set1_ps(xd[t * nb + b])), acc[t]);
      }
    } else {
      __m256i w[8];
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 32 * c));
        w[c] = _mm256_and_si256(raw, nibble);                            // k = 4c + i
        w[4 + c] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);  // k = 16 + 4c + i
      }
      for (int t = 0; t < MT; ++t) {
        const int8_t* bh = xh + t * K + b * kQBlock;
        const int8_t* bl = xl + t * K + b * kQBlock;
        // 16 products of <= 15*127 per int16 lane: <= 30480, no overflow; the madds widen to
        // int32 (254 * 2 * 30480 + 2 * 30480 < 2^24 per lane).
        __m256i h = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], broadcast4(bh)), _mm256_maddubs_epi16(w[1], broadcast4(bh + 4)));
        for (int j = 2; j < 8; ++j) h = _mm256_add_epi16(h, _mm256_maddubs_epi16(w[j], broadcast4(bh + 4 * j)));
        __m256i sum = _mm256_madd_epi16(h, k254);
        __m256i l = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], broadcast4(bl)), _mm256_maddubs_epi16(w[1], broadcast4(bl + 4)));
        for (int j = 2; j < 8; ++j) l = _mm256_add_epi16(l, _mm256_maddubs_epi16(w[j], broadcast4(bl + 4 * j)));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(l, ones));
        if constexpr (QT == QType::Q4_0) sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(8 * a.sum[(m0 + t) * nb + b]));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(xd[t * nb + b])), acc[t]);
      }
    }
  }
  if constexpr (QT == QType::Q4_1) {
    // min term, low = sum_b mw[b] * ds[b], its own FMA chain; one fp16 conversion serves MT rows
    __m256 low[MT];
    for (int t = 0; t < MT; ++t) low[t] = _mm256_setzero_ps();
    const float* xds = a.ds + m0 * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + b * SB + 16)));
      for (int t = 0; t < MT; ++t) low[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xds[t * nb + b]), low[t]);
    }
    for (int t = 0; t < MT; ++t) acc[t] = _mm256_add_ps(acc[t], low[t]);
  }
  if constexpr (QT == QType::Q8_0) {  // back to row order (the permutation is its own inverse)
    for (int t = 0; t < MT; ++t) acc[t] = _mm256_permutevar8x32_ps(acc[t], hadd_row_order());
  }
  for (int t = 0; t < MT; ++t) {
    __m256 y = acc[t];
    float* row = out + (m0 + t) * ldo;
    if (valid_rows == kRowsPerGroup) {
      if (bias != nullptr) y = _mm256_add_ps(y, _mm256_loadu_ps(bias));
      _mm256_storeu_ps(row, y);
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, y);
      for (int64_t r = 0; r < valid_rows; ++r) row[r] = bias != nullptr ? tmp[r] + bias[r] : tmp[r];
    }
  }
}


template <QType QT>
void gemm(const QuantizedActivations& a, const uint8_t* packed, int64_t N, float* out, int64_t ldo, const float* bias) {
  constexpr int64_t QB = QT == QType::Q8_0 ? 256 : 128;
  constexpr int64_t SB = QT == QType::Q4_1 ? 32 : 16;
  const int64_t M = a.M;
  const int64_t nb = a.K / kQBlock;
  const int64_t groups = (N + kRowsPerGroup - 1) / kRowsPerGroup;
  const uint8_t* quants = packed;
  const uint8_t* scales = packed + groups * nb * QB;
  // One int8 path serves every M. Measured on the 2-core Zen 3 dev VM (bench/kernels/qlinear.py):
  // at one row it streams the weights near the read bandwidth (the GGUF bytes are 4-7x fewer
  // than fp32's); from 4 rows up it runs at ~120-140 GFLOP/s per core for Q4, above fp32 FMA's
  // own peak (~96 GFLOP/s per core at 3 GHz), and ~90 for Q8_0 with two maddubs passes, about
  // that peak, which MKL's sgemm approaches but does not pass (Q8_0's int16 madd path since: LM
  // head at 16 rows 13.9 -> 9.6 ms, at 64 rows 39-55 -> 33-36 ms). So neither dequantizing tiles for an FMA microkernel
  // nor dequantizing for sgemm (plus the dequantization itself) can win at any M; and one path
  // keeps every row's result independent of the batch. Expanding a group's weights once for
  // all its row tiles was measured too: no gain (the maddubs/add pipes, not unpacking, bound it);
  // so was pre-broadcasting few-row activations to feed maddubs from memory: no gain either.
  // A task should outweigh the pool's fork/join (~2 us): at least ~256 group-block-rows.
  const int64_t grain = std::max<int64_t>(1, 256 / std::max<int64_t>(1, nb * M));
  // Activation rows per pass over a thread's groups: 64 rows of K int8 stay in L1/L2 while the
  // groups' weights stream past them.
  constexpr int64_t kRowChunk = ASTRAI_QLINEAR_ROW_CHUNK;
  parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t mc = 0; mc < M; mc += kRowChunk) {
      const int64_t mend = std::min(M, mc + kRowChunk);
      for (int64_t g = g0; g < g1; ++g) {
        const uint8_t* gq = quants + g * nb * QB;
        const uint8_t* gs = scales + g * nb * SB;
        const int64_t n0 = g * kRowsPerGroup;
        const int64_t valid = std::min<int64_t>(kRowsPerGroup, N - n0);
        const float* gbias = bias != nullptr ? bias + n0 : nullptr;
        float* gout = out + n0;
        int64_t m = mc;
        constexpr int kTile = ASTRAI_QLINEAR_TILE_ROWS;
        for (; m + kTile <= mend; m += kTile) group_tile<QT, kTile>(a, m, gq, gs, nb, gout, ldo, valid, gbias);
        switch (mend - m) {
          case 3: group_tile<QT, 3>(a, m, gq, gs, nb, gout, ldo, valid, gbias); break;
          case 2: group_tile<QT, 2>(a, m, gq, gs, nb, gout, ldo, valid, gbias); break;
          case 1: group_tile<QT, 1>(a, m, gq, gs, nb, gout, ldo, valid, gbias); break;
          default: break;
        }
      }
    }
  });
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
  return 4 * M * K + 12 * M * (K / kQBlock);
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
  const int64_t nb = a.K / kQBlock;
  // planar: q_hi [M*K] | q_lo [M*K] | a [M*K] int16 | d [M*nb] | ds [M*nb] | sum [M*nb]; M*K is a
  // multiple of 32, so all aligned.
  a.storage = storage;
  uint8_t* base = a.storage.data_ptr<uint8_t>();
  int8_t* q_hi = reinterpret_cast<int8_t*>(base);
  int8_t* q_lo = q_hi + a.M * a.K;
  int16_t* a16 = reinterpret_cast<int16_t*>(base + 2 * a.M * a.K);
  float* d = reinterpret_cast<float*>(base + 4 * a.M * a.K);
  float* ds = d + a.M * nb;
  int32_t* sum = reinterpret_cast<int32_t*>(ds + a.M * nb);
  a.q_hi = q_hi;
  a.q_lo = q_lo;
  a.a = a16;
  a.d = d;
  a.ds = ds;
  a.sum = sum;
  const float* src = x.data_ptr<float>();
  const int64_t K = a.K;
  // Quantizing a row costs ~K/4 ns: only rows worth ~16k elements per task go to the pool.
  const int64_t grain = std::max<int64_t>(1, 16384 / K);
  parallel_for(0, a.M, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      quantize_row(src + r * K, nb, q_hi + r * K, q_lo + r * K, a16 + r * K, d + r * nb, ds + r * nb, sum + r * nb);
  });
  return a;
}

void qlinear_out(const QuantizedActivations& x, const at::Tensor& packed, QType qtype, int64_t N, int64_t K,
                 const std::optional<at::Tensor>& bias, at::Tensor& out) {
  TORCH_CHECK(x.K == K, "qlinear: x has ", x.K, " features, the weight expects in_features=", K);
  TORCH_CHECK(N > 0, "qlinear: out_features must be positive, got ", N);
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kByte && packed.dim() == 1 && packed.is_contiguous(),
              "qlinear: packed weight must be a contiguous 1-D uint8 CPU tensor (from pack_gguf)");
  TORCH_CHECK(packed.numel() == packed_nbytes(qtype, N, K), "qlinear: packed weight has ", packed.numel(),
              " bytes, expected ", packed_nbytes(qtype, N, K), " for type ", static_cast<int64_t>(qtype), ", N=", N, ", K=", K);
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
    case QType::Q8_0: gemm<QType::Q8_0>(x, w, N, y, ldo, bias_ptr); break;
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

namespace {

at::Tensor qlinear_op(const at::Tensor& x, const at::Tensor& packed, int64_t qtype, int64_t N, int64_t K,
                      const std::optional<at::Tensor>& bias) {
  return qlinear(x, packed, checked_qtype(qtype), N, K, bias);
}

at::Tensor qlinear_out_op(const at::Tensor& x, const at::Tensor& packed, int64_t qtype, int64_t N, int64_t K,
                          const std::optional<at::Tensor>& bias, at::Tensor out) {
  qlinear(x, packed, checked_qtype(qtype), N, K, bias, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> quantize_activations_op(
    const at::Tensor& x, const std::optional<at::Tensor>& storage) {
  const QuantizedActivations a = storage.has_value() ? quantize_activations(x, *storage) : quantize_activations(x);
  const int64_t M = a.M, K = a.K, nb = K / kQBlock;
  const at::Tensor& s = a.storage;
  at::Tensor q_hi = s.narrow(0, 0, M * K).view(at::kChar).view({M, K});
  at::Tensor q_lo = s.narrow(0, M * K, M * K).view(at::kChar).view({M, K});
  at::Tensor d = s.narrow(0, 4 * M * K, 4 * M * nb).view(at::kFloat).view({M, nb});
  at::Tensor ds = s.narrow(0, 4 * M * K + 4 * M * nb, 4 * M * nb).view(at::kFloat).view({M, nb});
  at::Tensor sum = s.narrow(0, 4 * M * K + 8 * M * nb, 4 * M * nb).view(at::kInt).view({M, nb});
  return {q_hi, q_lo, d, ds, sum};
}

int64_t packed_nbytes_op(int64_t qtype, int64_t N, int64_t K) {
  TORCH_CHECK(N > 0 && K > 0 && K % kQBlock == 0, "qlinear_packed_nbytes: need N > 0 and K a positive multiple of 32");
  return packed_nbytes(checked_qtype(qtype), N, K);
}

// Bench support: read every byte of `data` (2 threads, 256-bit loads) `repeats` times; returns a
// checksum so the reads cannot be elided. Gives the streaming-read ceiling the GEMV aims at.
int64_t read_bandwidth_probe(const at::Tensor& data, int64_t repeats) {
  TORCH_CHECK(data.is_contiguous() && data.scalar_type() == at::kByte && data.numel() % 128 == 0,
              "read_bandwidth_probe: need a contiguous uint8 tensor whose size is a multiple of 128");
  const uint8_t* p = data.data_ptr<uint8_t>();
  const int64_t lines = data.numel() / 128;
  std::atomic<int64_t> total{0};
  for (int64_t rep = 0; rep < repeats; ++rep) {
    parallel_for(0, lines, 4096, [&](int64_t l0, int64_t l1) {
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t l = l0; l < l1; ++l) {
        const __m256i* v = reinterpret_cast<const __m256i*>(p + l * 128);
        a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(v));
        a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(v + 1));
        a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(v + 2));
        a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(v + 3));
      }
      const __m256i x = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
      total += _mm256_extract_epi64(x, 0) ^ _mm256_extract_epi64(x, 3);
    });
  }
  return total.load();
}

// Bench support: run qlinear_out(xs[i], packed[i]) for i in order, `repeats` times, timed in C++
// so the seconds of each pass exclude Python's per-call dispatch (~4 us, which a fused C++
// forward does not pay). Returns one figure per pass.
std::vector<double> qlinear_chain_seconds(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& packed,
                                          const std::vector<int64_t>& qtypes, const std::vector<int64_t>& ns,
                                          int64_t repeats) {
  TORCH_CHECK(xs.size() == packed.size() && xs.size() == qtypes.size() && xs.size() == ns.size() && !xs.empty(),
              "qlinear_chain_seconds: xs, packed, qtypes and ns must have the same, positive length");
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < xs.size(); ++i) outs.push_back(at::empty({xs[i].size(0), ns[i]}, xs[i].options()));
  std::vector<double> seconds;
  for (int64_t rep = 0; rep < repeats; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < xs.size(); ++i)
      qlinear(xs[i], packed[i], checked_qtype(qtypes[i]), ns[i], xs[i].size(1), std::nullopt, outs[i]);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ASTRAI_OPS, m) {
  m.def("qlinear(Tensor x, Tensor packed, int qtype, int out_features, int in_features, Tensor? bias=None) -> Tensor",
        &qlinear_op);
  m.def("qlinear_out(Tensor x, Tensor packed, int qtype, int out_features, int in_features, Tensor? bias, "
        "Tensor(a!) out) -> Tensor(a!)",
        &qlinear_out_op);
  m.def("quantize_activations(Tensor x, Tensor? storage=None) -> (Tensor q_hi, Tensor q_lo, Tensor d, Tensor ds, "
        "Tensor sum)",
        &quantize_activations_op);
  m.def("qlinear_packed_nbytes(int qtype, int out_features, int in_features) -> int", &packed_nbytes_op);
  m.def("read_bandwidth_probe(Tensor data, int repeats) -> int", &read_bandwidth_probe);
  m.def("qlinear_chain_seconds(Tensor[] xs, Tensor[] packed, int[] qtypes, int[] out_features, int repeats) -> float[]",
        &qlinear_chain_seconds);
}

}  // namespace astrai
