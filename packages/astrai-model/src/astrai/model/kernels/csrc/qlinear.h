// Native low-bit linear layers: y = x W^T (+ b) with W kept in its GGUF quantization, repacked
// once by pack_gguf into packed_layout.h's layout.
//
// Arithmetic (identical for every M, every thread count and every instruction-set variant, so a
// row's result never depends on the batch it is in; astrai.model.kernels.quant's
// linear_reference_exact emulates it in torch):
//   activations, per row and block b of 32, in two int8 parts (~15 bits together):
//     amax < 2^-110: the block is zero (q_hi = q_lo = 0, d = 0); else
//     d_hi = amax/127, q_hi = clamp(round_half_even(x * (1/d_hi)), -127, 127),
//     r = fma(-q_hi, d_hi, x) (|r| <= d_hi/2), d = d_hi/254,
//     q_lo = clamp(round_half_even(r * (1/d)), -127, 127);
//     so x ~ d * a with a = 254*q_hi + q_lo in [-32385, 32385]; sum16 = sums of a over each 16,
//     sum = sum16[0] + sum16[1], ds = d * float(sum);
//   weights: w = s * (q - o) + m (packed_layout.h), s per span of 32 (or 16 for Q6_K / Q3_K);
//   per output (m, n), fp32:  main = 0, low = 0; for b in blocks, for each span of b in order:
//     i    = sum_{k in span} q[n,k] * a[m,k] - o * sum_span(a)       (exact int32)
//     main = fma(float(i), s[n,span] * d[m,b], main)                  (float(i): round-half-even)
//   for the types with a min, then: for b in blocks: low = fma(m[n,b], ds[m,b], low)
//   y = main (+ low) (+ bias[n]).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "packed_layout.h"

namespace astrai {

// x quantized per block of 32, all in one owning byte buffer
// (planar: q_hi, q_lo, a, d, ds, sum, sum16).
struct QuantizedActivations {
  at::Tensor storage;
  int64_t M = 0, K = 0;
  const int8_t* q_hi = nullptr;   // [M, K]
  const int8_t* q_lo = nullptr;   // [M, K]
  const int16_t* a = nullptr;     // [M, K]  254*q_hi + q_lo, exact (Q8_0 multiplies it as int16)
  const float* d = nullptr;       // [M, K/32]  scale of a = 254*q_hi + q_lo (d_hi / 254)
  const float* ds = nullptr;      // [M, K/32]  d * float(sum)
  const int32_t* sum = nullptr;   // [M, K/32]  sum of a over the block
  const int32_t* sum16 = nullptr; // [M, K/16]  sums of a over each half block
};

// Bytes of the buffer quantize_activations fills for M rows of K: 4*M*K + 20*M*(K/32).
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
