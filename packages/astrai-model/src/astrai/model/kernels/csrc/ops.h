// Small fused per-layer ops of a pre-norm decoder, on float32 activations and weights.
//
// C++ entry points for a fused model forward (namespace astrai); each is also registered as
// a torch operator by module.cpp. "Row" tensors may be views: the last dimension must be contiguous,
// the other strides are free (e.g. q/k slices of a fused qkv output). Each computes what the
// named torch code computes, in float32.
#pragma once

#include <ATen/ATen.h>

namespace astrai {

// out = w * (x * rsqrt(mean(x^2, -1) + eps)), as astrai.model.layers.RMSNorm.
//   x [T, C], w [C] contiguous, out [T, C] (may alias x).
void rms_norm(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& out);

// The pre-norm step between sublayers, both tensors updated in place:
//   residual <- residual + x             (the hidden state after the sublayer whose output is x)
//   x        <- rms_norm(residual, w)    (the normalised input of the next sublayer)
// x, residual [T, C]; w [C].
void add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& w, double eps);

// Per-head RMSNorm in place (qwen3's q/k norm): x[t, h] <- rms_norm(x[t, h], w).
//   x [T, heads, D], w [D].
void head_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// Rotary embedding in place, rotate-half layout, bit-for-bit astrai.model.rope.apply_rotary:
//   x[t, h] <- x * cos[pos[t]] + rotate_half(x) * sin[pos[t]], rotate_half(x) = cat(-x2, x1)
//   qk [T, heads, D], positions [T] int64, cos/sin [max_pos, D] float32 contiguous (RotaryTable).
void rotary(const at::Tensor& qk, const at::Tensor& positions, const at::Tensor& cos, const at::Tensor& sin);

// SwiGLU's activation: out = silu(gate_up[:, :I]) * gate_up[:, I:].
//   gate_up [T, 2I], out [T, I].
void silu_mul(const at::Tensor& gate_up, const at::Tensor& out);

// GeGLU's activation (gemma): out = gelu_tanh(gate_up[:, :I]) * gate_up[:, I:], gelu with the
// tanh approximation 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), computed as g / (1 + exp(-2 y)).
void gelu_tanh_mul(const at::Tensor& gate_up, const at::Tensor& out);

}  // namespace astrai
