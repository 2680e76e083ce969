// Native low-bit linear layers: y = x W^T (+ b) with W kept in its GGUF quantization
// (Q4_0, Q4_1, Q8_0), repacked once by astrai.model.kernels.quant.pack_gguf.
//
// Arithmetic (identical on every path and every M, so a row's result never depends on the
// batch it is in; astrai.model.kernels.quant.linear_reference_exact emulates it in torch):
//   activations, per row and block b of 32, in two int8 parts (~15 bits together):
//     amax < 2^-110: the block is zero (q_hi = q_lo = 0, d = 0); else
//     d_hi = amax/127, q_hi = clamp(round_half_even(x * (1/d_hi)), -127, 127),
//     r = fma(-q_hi, d_hi, x) (|r| <= d_hi/2), d = d_hi/254,
//     q_lo = clamp(round_half_even(r * (1/d)), -127, 127);
//     so x ~ d * a with a = 254*q_hi + q_lo in [-32385, 32385];  sum = sum(a), ds = d * float(sum);
//   per output (m, n), fp32:  main = 0, low = 0; for b in blocks:
//     i    = sum_k qw[n,k] * a[m,k] = 254 * (qw . q_hi) + (qw . q_lo)   (exact int32: |i| <=
//            32*15*32385 < 2^24 for Q4, 32*128*32385 < 2^31 for Q8_0; Q4 weights: raw nibbles)
//     Q4_0: i -= 8 * sum[m,b]
//     main = fma(float(i), dw[n,b] * d[m,b], main)      (float(i): round-half-even)
//     Q4_1: low = fma(mw[n,b], ds[m,b], low)
//   y = main (+ low for Q4_1) (+ bias[n]).
//
// Packed layout (one uint8 tensor, G = ceil(N/8) groups of 8 output rows, nb = K/32 blocks):
//   [quants: G x nb x QB bytes][scales: G x nb x SB bytes]
//   QB = 128 (Q4) or 256 (Q8_0): 32-byte chunks c; byte 4r+i of chunk c holds row r's weights
//     k = 4c+i (Q8_0: one int8) or, for Q4, k = 4c+i in the low nibble and k = 16+4c+i in the
//     high nibble: chunk c is row r's GGUF qs[4c..4c+3] placed in 32-bit lane r;
//   SB = 16 (8 fp16 d) or 32 for Q4_1 (8 fp16 d, then 8 fp16 m). Rows >= N are zero.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace astrai {

enum class QType : int64_t { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };  // GGML type ids

constexpr int64_t kQBlock = 32;         // weights per quantization block
constexpr int64_t kRowsPerGroup = 8;    // output rows interleaved in one group

int64_t quant_bytes_per_group_block(QType qtype);   // QB
int64_t scale_bytes_per_group_block(QType qtype);   // SB
int64_t packed_nbytes(QType qtype, int64_t N, int64_t K);

// x quantized per block of 32, all in one owning byte buffer (planar: q_hi, q_lo, a, d, ds, sum).
struct QuantizedActivations {
  at::Tensor storage;
  int64_t M = 0, K = 0;
  const int8_t* q_hi = nullptr;  // [M, K]
  const int8_t* q_lo = nullptr;  // [M, K]
  const int16_t* a = nullptr;    // [M, K]  254*q_hi + q_lo, exact (Q8_0 multiplies it as int16)
  const float* d = nullptr;      // [M, K/32]  scale of a = 254*q_hi + q_lo (d_hi / 254)
  const float* ds = nullptr;     // [M, K/32]  d * float(sum)
  const int32_t* sum = nullptr;  // [M, K/32]  sum of a over the block
};

// Bytes of the buffer quantize_activations fills for M rows of K: 4*M*K + 12*M*(K/32).
int64_t activation_storage_bytes(int64_t M, int64_t K);

// x: float32 [M, K], contiguous, K % 32 == 0. Thread-safe; parallel over rows when large.
// The second form writes into `storage` (contiguous uint8, >= activation_storage_bytes(M, K)),
// so a forward can reuse one buffer across calls instead of allocating per linear.
QuantizedActivations quantize_activations(const at::Tensor& x);
QuantizedActivations quantize_activations(const at::Tensor& x, const at::Tensor& storage);

// out (float32 [M, N], rows of stride out.stride(0) >= N, unit column stride) = x W^T (+ bias).
// packed: uint8 tensor of packed_nbytes(qtype, N, K) bytes; bias: float32 [N] or undefined.
void qlinear_out(const QuantizedActivations& x, const at::Tensor& packed, QType qtype, int64_t N,
                 int64_t K, const std::optional<at::Tensor>& bias, at::Tensor& out);

// Convenience: quantize x (float32 [M, K]) and run; allocates out unless given.
at::Tensor qlinear(const at::Tensor& x, const at::Tensor& packed, QType qtype, int64_t N, int64_t K,
                   const std::optional<at::Tensor>& bias = std::nullopt,
                   std::optional<at::Tensor> out = std::nullopt);

}  // namespace astrai
