// Repacking GGUF block rows into the kernels' layout (packed_layout.h), and reading it back.
#pragma once

#include <ATen/ATen.h>

#include "packed_layout.h"

namespace astrai {

// raw: uint8 [N, (K / block weights) * block bytes], the GGUF rows of one (or several fused)
// tensors of `qtype`; returns the packed uint8 [packed_nbytes(qtype, N, K)].
at::Tensor pack_gguf(const at::Tensor& raw, QType qtype, int64_t K);

// Row n of a packed weight as float32 [K], bit-identical to gguf's dequantization.
void dequantize_row(const uint8_t* packed, QType qtype, int64_t N, int64_t K, int64_t n, float* out);

// The packed weight as float32 [N, K].
at::Tensor dequantize_packed(const at::Tensor& packed, QType qtype, int64_t N, int64_t K);

// What the kernels compute with (tests' emulation): codes q int16 [N, K], the scale of every 16
// weights s float32 [N, K/16] (a 32-weight span repeats its scale), the additive min m float32
// [N, K/32] (zero for types without one); w = s * (q - offset) + m.
std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_components(const at::Tensor& packed, QType qtype, int64_t N,
                                                                 int64_t K);

// Checks shared by every entry point taking a packed weight.
void check_packed(const at::Tensor& packed, QType qtype, int64_t N, int64_t K, const char* what);

}  // namespace astrai
