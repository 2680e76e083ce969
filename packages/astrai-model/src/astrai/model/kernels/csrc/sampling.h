// Temperature sampling by inverse CDF over float32 logits, one row per task.
//
// The canonical arithmetic per row (the same on every variant, and for a row whatever else is
// in the call): z_i = l_i / t; m = max_i z_i; e_i = exp(z_i - m) (simd::exp_lanes); the row in
// chunks of 16 (the last padded with zeros), each chunk's sum by the tree (i, i+8), (i, i+4),
// (i, i+2), (i, i+1); the chunk sums added left to right in float32 into the running mass, whose
// final value is the total. The pick is the first chunk whose running mass exceeds u * total
// (in double), then inside it the first token with e > 0 whose running mass (continued left to
// right from the chunk's start) exceeds it. Where rounding leaves no such chunk, the pick is the
// row's last token with e > 0; where it leaves no such token in the chunk, the chunk's last one
// with e > 0. Tokens with e = 0 (an -inf logit) are never picked.
#pragma once

#include <ATen/ATen.h>

namespace astrai {

// logits [R, V] float32 (last dim contiguous), temperature [R] float32 (> 0), uniform [R]
// float64 in [0, 1): the picked token per row as int64 [R], or -1 for a row whose maximum is
// NaN or -inf (the caller decides what such a row means).
at::Tensor sample_temperature(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& uniform);

}  // namespace astrai
