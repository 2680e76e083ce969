// Temperature sampling (the arithmetic: sampling.h).
#include "sampling.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "parallel.h"
#include "simd.h"

namespace astrai {
namespace {

constexpr int64_t kChunk = 16;

// The chunk's sum by the tree (i, i+8), (i, i+4), (i, i+2), (i, i+1), in 256-bit lanes so every
// variant adds the same pairs.
inline float chunk_sum(const float* e) {
  const __m256 s8 = _mm256_add_ps(_mm256_loadu_ps(e), _mm256_loadu_ps(e + 8));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  return _mm_cvtss_f32(s4);
}

// e_i = exp(l_i / t - m) for whole vectors of W from i on; returns where it stopped.
template <class W>
int64_t exps_lanes(const float* l, float t, float m, float* e, int64_t i, int64_t V) {
  const typename W::V vt = W::set1(t), vm = W::set1(m);
  for (; i + W::kLanes <= V; i += W::kLanes)
    W::store(e + i, simd::exp_lanes<W>(W::sub(W::div(W::load(l + i), vt), vm)));
  return i;
}

// The maximum of l_i / t over whole vectors of W into m; returns where it stopped.
template <class W>
int64_t max_lanes(const float* l, float t, int64_t V, float& m) {
  typename W::V vm = W::set1(-std::numeric_limits<float>::infinity());
  const typename W::V vt = W::set1(t);
  int64_t i = 0;
  for (; i + W::kLanes <= V; i += W::kLanes) vm = W::max(vm, W::div(W::load(l + i), vt));
  alignas(64) float lanes[W::kLanes];
  W::store(lanes, vm);
  for (int j = 0; j < W::kLanes; ++j) m = std::max(m, lanes[j]);
  return i;
}

// A thread's buffers for one row: e (padded to whole chunks) and the chunk sums.
struct RowScratch {
  std::vector<float> e, sums;
};

int64_t sample_row(const float* l, int64_t V, float t, double u, RowScratch& s) {
  // the maximum: order-free, so any lane split gives the same value (a NaN anywhere is caught below)
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(ASTRAI_ISA_AVX512)
  i = max_lanes<simd::F16>(l, t, V, m);
#else
  i = max_lanes<simd::F8>(l, t, V, m);
#endif
  for (; i < V; ++i) m = std::max(m, l[i] / t);
  if (std::isnan(m) || std::isinf(m)) return -1;

  const int64_t chunks = (V + kChunk - 1) / kChunk;
  s.e.resize(chunks * kChunk);
  float* e = s.e.data();
  i = 0;
#if defined(ASTRAI_ISA_AVX512)
  i = exps_lanes<simd::F16>(l, t, m, e, i, V);
#endif
  i = exps_lanes<simd::F8>(l, t, m, e, i, V);
  if (i < V) {  // the last < 8 through one padded 8-lane vector: the same operations per lane
    alignas(32) float in[8] = {}, out[8];
    std::copy(l + i, l + V, in);
    exps_lanes<simd::F8>(in, t, m, out, 0, 8);
    std::copy(out, out + (V - i), e + i);
  }
  std::fill(e + V, e + chunks * kChunk, 0.0f);

  s.sums.resize(chunks);
  float total = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) total += (s.sums[c] = chunk_sum(e + c * kChunk));
  if (std::isnan(total)) return -1;  // a NaN logit (the maximum may have skipped it)
  const double threshold = u * static_cast<double>(total);
  float mass = 0.0f;
  int64_t chosen = -1;
  for (int64_t c = 0; c < chunks; ++c) {
    const float next = mass + s.sums[c];
    if (static_cast<double>(next) > threshold) {
      chosen = c;
      break;
    }
    mass = next;
  }
  if (chosen < 0) {  // u * total rounded up to the total: the row's last token with mass
    for (int64_t k = V - 1; k >= 0; --k)
      if (e[k] > 0.0f) return k;
  }
  const float* ec = e + chosen * kChunk;
  int64_t last = -1;
  for (int64_t k = 0; k < kChunk; ++k) {
    if (ec[k] <= 0.0f) continue;
    mass += ec[k];
    last = k;
    if (static_cast<double>(mass) > threshold) return chosen * kChunk + k;
  }
  return chosen * kChunk + last;
}

}  // namespace

at::Tensor sample_temperature(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& uniform) {
  TORCH_CHECK(logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.stride(1) == 1,
              "sample_temperature: logits must be a float32 CPU tensor [R, V] with a contiguous last dimension, got ",
              logits.scalar_type(), " ", logits.sizes());
  const int64_t R = logits.size(0), V = logits.size(1);
  TORCH_CHECK(V > 0, "sample_temperature: the vocabulary is empty");
  TORCH_CHECK(temperature.device().is_cpu() && temperature.scalar_type() == at::kFloat && temperature.dim() == 1 &&
                  temperature.size(0) == R && temperature.is_contiguous(),
              "sample_temperature: temperature must be a contiguous float32 CPU tensor [", R, "]");
  TORCH_CHECK(uniform.device().is_cpu() && uniform.scalar_type() == at::kDouble && uniform.dim() == 1 &&
                  uniform.size(0) == R && uniform.is_contiguous(),
              "sample_temperature: uniform must be a contiguous float64 CPU tensor [", R, "]");
  const float* lp = logits.data_ptr<float>();
  const float* tp = temperature.data_ptr<float>();
  const double* up = uniform.data_ptr<double>();
  for (int64_t r = 0; r < R; ++r) {
    TORCH_CHECK(tp[r] > 0.0f && std::isfinite(tp[r]), "sample_temperature: temperature must be positive and finite, got ", tp[r]);
    TORCH_CHECK(up[r] >= 0.0 && up[r] < 1.0, "sample_temperature: uniform must lie in [0, 1), got ", up[r]);
  }
  at::Tensor out = at::empty({R}, logits.options().dtype(at::kLong));
  int64_t* op = out.data_ptr<int64_t>();
  const int64_t ls = logits.stride(0);
  parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    static thread_local RowScratch scratch;
    for (int64_t r = r0; r < r1; ++r) op[r] = sample_row(lp + r * ls, V, tp[r], up[r], scratch);
  });
  return out;
}

}  // namespace astrai
