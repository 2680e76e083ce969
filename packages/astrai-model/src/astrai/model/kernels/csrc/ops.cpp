// Fused small ops of a decoder layer (AVX2 + FMA; SiLU also on 16 lanes in the avx512 build):
// RMSNorm (plain, with the residual add, per head), rotary embedding, SiLU x up. Rows are split
// over threads only when there are enough of them to pay for the fork.
#include "ops.h"


#include <cmath>

#include "simd.h"
#include "parallel.h"

namespace astrai {
namespace {

constexpr int64_t kElementsPerTask = 16384;  // below this much work per thread, run on one

int64_t grain_for(int64_t row_elements) { return std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, row_elements)); }

void check_rows(const at::Tensor& t, const char* op, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK(t.stride(dim - 1) == 1 || t.size(dim - 1) <= 1, op, ": ", name, " needs a contiguous last dimension");
}

void check_weight(const at::Tensor& w, const char* op, int64_t size) {
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == at::kFloat, op, ": weight must be a float32 CPU tensor");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == size && w.is_contiguous(), op, ": weight must be contiguous [", size,
              "], got shape ", w.sizes());
}

float sum_squares(const float* x, int64_t C) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= C; i += 32) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    const __m256 x2 = _mm256_loadu_ps(x + i + 16), x3 = _mm256_loadu_ps(x + i + 24);
    a0 = _mm256_fmadd_ps(x0, x0, a0);
    a1 = _mm256_fmadd_ps(x1, x1, a1);
    a2 = _mm256_fmadd_ps(x2, x2, a2);
    a3 = _mm256_fmadd_ps(x3, x3, a3);
  }
  for (; i + 8 <= C; i += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(x0, x0, a0);
  }
  float total = simd::hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < C; ++i) total += x[i] * x[i];
  return total;
}

// out = w * (x * inv_rms): the two roundings of torch's `weight * (x * rsqrt(...))`.
void normalise_row(const float* x, const float* w, float* out, int64_t C, float eps) {
  const float inv = 1.0f / std::sqrt(sum_squares(x, C) / static_cast<float>(C) + eps);
  const __m256 iv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 8 <= C; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), iv)));
  for (; i < C; ++i) out[i] = w[i] * (x[i] * inv);
}

float silu_scalar(float g) { return g / (1.0f + std::exp(-g)); }

// o[i] = silu(g[i]) * u[i] over whole vectors from i; returns where they stop. The same
// operations per lane at every width (simd::exp_lanes), so the same results.
template <class W>
int64_t silu_mul_lanes(const float* g, const float* u, float* o, int64_t i, int64_t n) {
  for (; i + W::kLanes <= n; i += W::kLanes) {
    const typename W::V gv = W::load(g + i);
    const typename W::V silu = W::div(gv, W::add(W::set1(1.0f), simd::exp_lanes<W>(W::neg(gv))));
    W::store(o + i, W::mul(silu, W::load(u + i)));
  }
  return i;
}

}  // namespace

void rms_norm(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& out) {
  check_rows(x, "rms_norm", "x", 2);
  check_rows(out, "rms_norm", "out", 2);
  TORCH_CHECK(out.sizes() == x.sizes(), "rms_norm: out shape ", out.sizes(), " != x shape ", x.sizes());
  const int64_t T = x.size(0), C = x.size(1);
  check_weight(w, "rms_norm", C);
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t xs = x.stride(0), os = out.stride(0);
  const float e = static_cast<float>(eps);
  parallel_for(0, T, grain_for(C), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) normalise_row(xp + t * xs, wp, op + t * os, C, e);
  });
}

void add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& w, double eps) {
  check_rows(x, "add_rms_norm", "x", 2);
  check_rows(residual, "add_rms_norm", "residual", 2);
  TORCH_CHECK(residual.sizes() == x.sizes(), "add_rms_norm: residual shape ", residual.sizes(), " != x shape ", x.sizes());
  const int64_t T = x.size(0), C = x.size(1);
  check_weight(w, "add_rms_norm", C);
  float* xp = x.data_ptr<float>();
  float* rp = residual.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const int64_t xs = x.stride(0), rs = residual.stride(0);
  const float e = static_cast<float>(eps);
  parallel_for(0, T, grain_for(C), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* xr = xp + t * xs;
      float* rr = rp + t * rs;
      int64_t i = 0;
      for (; i + 8 <= C; i += 8) _mm256_storeu_ps(rr + i, _mm256_add_ps(_mm256_loadu_ps(rr + i), _mm256_loadu_ps(xr + i)));
      for (; i < C; ++i) rr[i] += xr[i];
      normalise_row(rr, wp, xr, C, e);
    }
  });
}

void head_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  check_rows(x, "head_rms_norm", "x", 3);
  const int64_t T = x.size(0), heads = x.size(1), D = x.size(2);
  check_weight(w, "head_rms_norm", D);
  float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  const float e = static_cast<float>(eps);
  parallel_for(0, T * heads, grain_for(D), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = xp + (r / heads) * s0 + (r % heads) * s1;
      normalise_row(row, wp, row, D, e);
    }
  });
}

void rotary(const at::Tensor& qk, const at::Tensor& positions, const at::Tensor& cos, const at::Tensor& sin) {
  check_rows(qk, "rotary", "qk", 3);
  const int64_t T = qk.size(0), heads = qk.size(1), D = qk.size(2);
  TORCH_CHECK(D % 2 == 0, "rotary: head_dim must be even, got ", D);
  TORCH_CHECK(positions.device().is_cpu() && positions.scalar_type() == at::kLong && positions.dim() == 1 &&
                  positions.size(0) == T && positions.is_contiguous(),
              "rotary: positions must be a contiguous int64 [", T, "] CPU tensor, got ", positions.scalar_type(), " ",
              positions.sizes());
  for (const at::Tensor* table : {&cos, &sin})
    TORCH_CHECK(table->device().is_cpu() && table->scalar_type() == at::kFloat && table->dim() == 2 &&
                    table->size(1) == D && table->is_contiguous(),
                "rotary: cos and sin must be contiguous float32 [max_pos, ", D, "], got ", table->sizes());
  TORCH_CHECK(sin.size(0) == cos.size(0), "rotary: cos and sin tables differ in length");
  const int64_t* pos = positions.data_ptr<int64_t>();
  const int64_t max_pos = cos.size(0);
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(pos[t] >= 0 && pos[t] < max_pos, "rotary: position ", pos[t], " of row ", t,
                " is outside the table of ", max_pos, " positions");
  float* xp = qk.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t s0 = qk.stride(0), s1 = qk.stride(1), half = D / 2;
  using simd::opaque;
  parallel_for(0, T * heads, grain_for(D), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / heads;
      float* x = xp + t * s0 + (r % heads) * s1;
      const float* c = cp + pos[t] * D;
      const float* s = sp + pos[t] * D;
      int64_t i = 0;
      for (; i + 8 <= half; i += 8) {
        const __m256 x1 = _mm256_loadu_ps(x + i), x2 = _mm256_loadu_ps(x + half + i);
        // first half: x1 * c + (-x2) * s; second: x2 * c' + x1 * s'; each product rounded on its own
        const __m256 a = opaque(_mm256_mul_ps(x1, _mm256_loadu_ps(c + i)));
        const __m256 b = opaque(_mm256_mul_ps(x2, _mm256_loadu_ps(s + i)));
        const __m256 e = opaque(_mm256_mul_ps(x2, _mm256_loadu_ps(c + half + i)));
        const __m256 f = opaque(_mm256_mul_ps(x1, _mm256_loadu_ps(s + half + i)));
        _mm256_storeu_ps(x + i, _mm256_sub_ps(a, b));
        _mm256_storeu_ps(x + half + i, _mm256_add_ps(e, f));
      }
      for (; i < half; ++i) {
        const float x1 = x[i], x2 = x[half + i];
        const float a = opaque(x1 * c[i]), b = opaque(x2 * s[i]);
        const float e = opaque(x2 * c[half + i]), f = opaque(x1 * s[half + i]);
        x[i] = a - b;
        x[half + i] = e + f;
      }
    }
  });
}

void silu_mul(const at::Tensor& gate_up, const at::Tensor& out) {
  check_rows(gate_up, "silu_mul", "gate_up", 2);
  check_rows(out, "silu_mul", "out", 2);
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "silu_mul: gate_up's last dimension must be even, got ", gate_up.size(1));
  TORCH_CHECK(out.size(0) == T && out.size(1) == I, "silu_mul: out must be [", T, ", ", I, "], got ", out.sizes());
  const float* gp = gate_up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t gs = gate_up.stride(0), os = out.stride(0);
  parallel_for(0, T, grain_for(2 * I), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gp + t * gs;
      const float* u = g + I;
      float* o = op + t * os;
      int64_t i = 0;
#if defined(ASTRAI_ISA_AVX512)
      i = silu_mul_lanes<simd::F16>(g, u, o, i, I);
#endif
      i = silu_mul_lanes<simd::F8>(g, u, o, i, I);
      for (; i < I; ++i) o[i] = silu_scalar(g[i]) * u[i];
    }
  });
}

void gelu_tanh_mul(const at::Tensor& gate_up, const at::Tensor& out) {
  check_rows(gate_up, "gelu_tanh_mul", "gate_up", 2);
  check_rows(out, "gelu_tanh_mul", "out", 2);
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "gelu_tanh_mul: gate_up's last dimension must be even, got ", gate_up.size(1));
  TORCH_CHECK(out.size(0) == T && out.size(1) == I, "gelu_tanh_mul: out must be [", T, ", ", I, "], got ", out.sizes());
  const float* gp = gate_up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t gs = gate_up.stride(0), os = out.stride(0);
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  parallel_for(0, T, grain_for(2 * I), [&](int64_t begin, int64_t end) {
    const __m256 one = _mm256_set1_ps(1.0f), minus_two = _mm256_set1_ps(-2.0f);
    const __m256 beta = _mm256_set1_ps(kBeta), kappa = _mm256_set1_ps(kKappa);
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gp + t * gs;
      const float* u = g + I;
      float* o = op + t * os;
      int64_t i = 0;
      for (; i + 8 <= I; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 inner = _mm256_mul_ps(beta, _mm256_add_ps(x, _mm256_mul_ps(kappa, _mm256_mul_ps(_mm256_mul_ps(x, x), x))));
        // 0.5 x (1 + tanh(y)) = x / (1 + exp(-2y)): no cancellation where tanh(y) nears -1
        const __m256 gelu = _mm256_div_ps(x, _mm256_add_ps(one, simd::exp_ps(_mm256_mul_ps(minus_two, inner))));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(gelu, _mm256_loadu_ps(u + i)));
      }
      for (; i < I; ++i) {
        const float x = g[i];
        o[i] = x / (1.0f + std::exp(-2.0f * (kBeta * (x + kKappa * x * x * x)))) * u[i];
      }
    }
  });
}

}  // namespace astrai
