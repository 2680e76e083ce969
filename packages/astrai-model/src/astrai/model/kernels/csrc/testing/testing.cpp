// Test- and bench-only operators of one kernel variant (torch.ops.astrai_<variant>_testing):
// they reach inside the production library (linked, not recompiled) to check its pieces one by
// one (the worker team, the activation quantization) and to measure the machine's ceilings.
// Never loaded by a serving process.
#include <immintrin.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>
#include <vector>

#include "parallel.h"
#include "qlinear.h"
#include "quant_pack.h"
#if defined(ASTRAI_ISA_AMX)
#include "isa/amx.h"
#endif

#ifndef ASTRAI_OPS
#error "ASTRAI_OPS (the testing operator namespace) is set by astrai.model.kernels.build"
#endif

namespace astrai {
namespace {

// ---- the worker team (tests/model/test_parallel.py) ----

// n visit counters, all zero.
std::unique_ptr<std::atomic<int32_t>[]> zero_visits(int64_t n) {
  std::unique_ptr<std::atomic<int32_t>[]> visits(new std::atomic<int32_t>[std::max<int64_t>(n, 1)]);
  for (int64_t i = 0; i < n; ++i) visits[i].store(0);
  return visits;
}

// The counters' values as an int32 tensor.
at::Tensor visits_tensor(const std::unique_ptr<std::atomic<int32_t>[]>& visits, int64_t n) {
  at::Tensor out = at::empty({n}, at::kInt);
  for (int64_t i = 0; i < n; ++i) out.data_ptr<int32_t>()[i] = visits[i].load();
  return out;
}

// Visits of each index of [0, n) by one parallel_for with `grain`: all ones when the chunks tile
// the range exactly once.
at::Tensor parallel_for_visits(int64_t n, int64_t grain) {
  TORCH_CHECK(n >= 0, "parallel_for_visits: n must be >= 0");
  const auto visits = zero_visits(n);
  parallel_for(0, n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) visits[i].fetch_add(1);
    parallel_for(b, e, 1, [](int64_t, int64_t) {});  // nested: runs inline, must not deadlock
  });
  return visits_tensor(visits, n);
}

// `submitters` std::threads each run `rounds` parallel_fors over [0, n) at once (one holds the
// team, the others run inline); returns how many index visits were wrong (0 when correct).
int64_t parallel_for_concurrent_errors(int64_t submitters, int64_t rounds, int64_t n) {
  std::atomic<int64_t> errors{0};
  std::vector<std::thread> threads;
  for (int64_t s = 0; s < submitters; ++s) {
    threads.emplace_back([&] {
      std::vector<std::atomic<int32_t>> visits(n);
      for (int64_t r = 0; r < rounds; ++r) {
        for (auto& v : visits) v.store(0);
        parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) visits[i].fetch_add(1);
        });
        for (auto& v : visits) errors += v.load() != 1;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors.load();
}

// Visits of each index of [0, n) by one parallel_for_stealing in pieces of `piece`; the piece
// holding index 0 first waits until every index outside it has been visited, which only another
// thread taking the rest of its owner's run can bring about (it gives up after `timeout_ms` and raises).
at::Tensor parallel_for_stealing_visits(int64_t n, int64_t piece, int64_t timeout_ms) {
  TORCH_CHECK(n > piece && piece >= 1, "parallel_for_stealing_visits: need n > piece >= 1");
  const auto visits = zero_visits(n);
  std::atomic<int64_t> others{0};
  parallel_for_stealing(0, n, piece, [&](int64_t b, int64_t e) {
    if (b == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
      while (others.load() < n - e)
        TORCH_CHECK(std::chrono::steady_clock::now() < deadline,
                    "parallel_for_stealing_visits: the waiting piece's owner was left with ", n - e - others.load(),
                    " indices: no other thread took them");
    } else {
      others.fetch_add(e - b);
    }
    for (int64_t i = b; i < e; ++i) visits[i].fetch_add(1);
  });
  return visits_tensor(visits, n);
}

// Throws from the chunk holding the last index: the caller must see the message.
void parallel_for_raise(int64_t n) {
  parallel_for(0, n, 1, [&](int64_t, int64_t e) {
    TORCH_CHECK(e != n, "parallel_for_raise: raised in the chunk ending at ", e);
  });
}

#if defined(ASTRAI_ISA_AMX)
// ---- one AMX dot-product instruction (tests/model/test_amx_code.py) ----

// c + a . b through TDPBSUD (b unsigned) or TDPBSSD (b signed) in the quantized linear's tile
// configuration for a span of a.size(1) (16 or 32) bytes: a is 16 x span int8, b is span/4 x 64
// bytes (row j: 16 outputs x the 4 bytes k = 4j..4j+3), c is 16 x 16 int32. Runs on a thread of
// its own: the tile configuration is per thread, and the production library's threads keep theirs.
at::Tensor amx_dot_products(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool b_signed) {
  TORCH_CHECK(a.scalar_type() == at::kChar && a.dim() == 2 && a.size(0) == 16 && (a.size(1) == 16 || a.size(1) == 32),
              "amx_dot_products: a must be int8 [16, 16 or 32], got ", a.scalar_type(), " ", a.sizes());
  const int64_t span = a.size(1);
  TORCH_CHECK(b.scalar_type() == (b_signed ? at::kChar : at::kByte) && b.dim() == 2 && b.size(0) == span / 4 &&
                  b.size(1) == 64,
              "amx_dot_products: b must be ", b_signed ? "int8" : "uint8", " [", span / 4, ", 64], got ",
              b.scalar_type(), " ", b.sizes());
  TORCH_CHECK(c.scalar_type() == at::kInt && c.dim() == 2 && c.size(0) == 16 && c.size(1) == 16,
              "amx_dot_products: c must be int32 [16, 16], got ", c.scalar_type(), " ", c.sizes());
  const at::Tensor ta = a.contiguous(), tb = b.contiguous();
  at::Tensor out = c.contiguous().clone();
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      isa::request_tile_permission();
      const isa::TileConfig config = isa::qlinear_tiles(static_cast<int>(span));
      _tile_loadconfig(&config);
      _tile_loadd(0, ta.data_ptr(), span);
      _tile_loadd(2, tb.data_ptr(), 64);
      _tile_loadd(3, out.data_ptr(), 64);
      if (b_signed) {
        _tile_dpbssd(3, 0, 2);
      } else {
        _tile_dpbsud(3, 0, 2);
      }
      _tile_stored(3, out.data_ptr(), 64);
      _tile_release();
    } catch (...) {
      error = std::current_exception();
    }
  });
  worker.join();
  if (error) std::rethrow_exception(error);
  return out;
}
#endif

// ---- the activation quantization (tests/model/test_qlinear.py) ----

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> quantize_activations_op(
    const at::Tensor& x, const std::optional<at::Tensor>& storage) {
  const QuantizedActivations a = storage.has_value() ? quantize_activations(x, *storage) : quantize_activations(x);
  const int64_t M = a.M, K = a.K;
  auto view = [&](const void* p, at::ScalarType type, std::vector<int64_t> shape) {
    const int64_t offset = static_cast<const uint8_t*>(p) - a.storage.data_ptr<uint8_t>();
    int64_t bytes = at::elementSize(type);
    for (int64_t s : shape) bytes *= s;
    return a.storage.narrow(0, offset, bytes).view(type).view(shape);
  };
  return {view(a.q_hi, at::kChar, {M, K}), view(a.q_lo, at::kChar, {M, K}), view(a.d, at::kFloat, {M, K / kQBlock}),
          view(a.ds, at::kFloat, {M, K / kQBlock}), view(a.sum, at::kInt, {M, K / kQBlock}),
          view(a.sum16, at::kInt, {M, K / 16})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_components_op(const at::Tensor& packed, int64_t qtype, int64_t N,
                                                                    int64_t K) {
  return packed_components(packed, checked_qtype(qtype), N, K);
}

// ---- machine ceilings and timing without Python dispatch (bench/) ----

// Read every byte of `data` (all threads, 256-bit loads) `repeats` times; returns a checksum so
// the reads cannot be elided. The streaming-read ceiling the one-row linear aims at.
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

// Run qlinear_out(xs[i], packed[i]) for i in order, `repeats` times, timed in C++ so the seconds
// of each pass exclude Python's per-call dispatch (which the fused C++ forward does not pay).
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

// ---- compute peaks of this variant's instructions (bench's roofline) ----

// Runs body(iterations) on every thread of the team at once and returns the operations per
// second, counting `ops_per_iteration` per iteration per thread.
template <typename Body>
double peak_rate(int64_t iterations, double ops_per_iteration, Body body) {
  const int threads = num_threads();
  body(iterations / 16);  // warm up (clock ramp, page faults)
  const auto start = std::chrono::steady_clock::now();
  parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) body(iterations);
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return ops_per_iteration * static_cast<double>(iterations) * threads / seconds;
}

// Sink for the accumulators so the loops cannot be removed.
std::atomic<int64_t> g_sink{0};

// int8 multiply-accumulates per second with this variant's quantized-linear instruction: AVX2
// maddubs (u8 x s8 pairs -> int16) then madd (-> int32); AVX-512 VNNI one vpdpbusd (4 products
// per int32 lane). Twelve independent accumulators hide the latency.
double int8_mac_peak(int64_t iterations) {
#if defined(ASTRAI_ISA_AVX512)
  return peak_rate(iterations, 12.0 * 64, [](int64_t n) {
    __m512i acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
    const __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(-2);
    for (int64_t it = 0; it < n; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], w, x);
    int64_t total = 0;
    for (int i = 0; i < 12; ++i) total += _mm512_reduce_add_epi32(acc[i]);
    g_sink += total;
  });
#else
  return peak_rate(iterations, 12.0 * 32, [](int64_t n) {
    __m256i acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i);
    const __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
    for (int64_t it = 0; it < n; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones));
    __m256i total = acc[0];
    for (int i = 1; i < 12; ++i) total = _mm256_add_epi32(total, acc[i]);
    g_sink += _mm256_extract_epi32(total, 0);
  });
#endif
}

// float32 FMAs per second (multiply + add counted as two operations: FLOP/s), 8-lane vectors:
// the width every variant's float kernels (attention, norms) use.
double fp32_fma_flops_peak(int64_t iterations) {
  return peak_rate(iterations, 12.0 * 8 * 2, [](int64_t n) {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    for (int64_t it = 0; it < n; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float total = 0.0f;
    alignas(32) float lanes[8];
    for (int i = 0; i < 12; ++i) {
      _mm256_store_ps(lanes, acc[i]);
      total += lanes[0];
    }
    g_sink += static_cast<int64_t>(total);
  });
}

// bf16 dot-product FLOP/s (vdpbf16ps: 2 products and their sum into each float32 lane), where
// the variant has AVX512-BF16; 0 elsewhere.
double bf16_dot_flops_peak(int64_t iterations) {
#if defined(ASTRAI_ISA_AVX512)
  return peak_rate(iterations, 12.0 * 32 * 2, [](int64_t n) {
    __m512 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(2e-3f));
    for (int64_t it = 0; it < n; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, a);
    float total = 0.0f;
    for (int i = 0; i < 12; ++i) total += _mm512_reduce_add_ps(acc[i]);
    g_sink += static_cast<int64_t>(total);
  });
#else
  (void)iterations;
  return 0.0;
#endif
}

}  // namespace
}  // namespace astrai

TORCH_LIBRARY(ASTRAI_OPS, m) {
  m.def("int8_mac_peak(int iterations) -> float", &astrai::int8_mac_peak);
  m.def("fp32_fma_flops_peak(int iterations) -> float", &astrai::fp32_fma_flops_peak);
  m.def("bf16_dot_flops_peak(int iterations) -> float", &astrai::bf16_dot_flops_peak);
  m.def("parallel_for_visits(int n, int grain) -> Tensor", &astrai::parallel_for_visits);
  m.def("parallel_for_concurrent_errors(int submitters, int rounds, int n) -> int",
        &astrai::parallel_for_concurrent_errors);
  m.def("parallel_for_raise(int n) -> ()", &astrai::parallel_for_raise);
  m.def("parallel_for_stealing_visits(int n, int piece, int timeout_ms) -> Tensor", &astrai::parallel_for_stealing_visits);
  m.def("quantize_activations(Tensor x, Tensor? storage=None) -> (Tensor q_hi, Tensor q_lo, Tensor d, Tensor ds, "
        "Tensor sum, Tensor sum16)",
        &astrai::quantize_activations_op);
  m.def("packed_components(Tensor packed, int qtype, int out_features, int in_features) -> (Tensor q, Tensor scale, "
        "Tensor min)",
        &astrai::packed_components_op);
  m.def("read_bandwidth_probe(Tensor data, int repeats) -> int", &astrai::read_bandwidth_probe);
  m.def("qlinear_chain_seconds(Tensor[] xs, Tensor[] packed, int[] qtypes, int[] out_features, int repeats) -> float[]",
        &astrai::qlinear_chain_seconds);
#if defined(ASTRAI_ISA_AMX)
  m.def("amx_dot_products(Tensor a, Tensor b, Tensor c, bool b_signed) -> Tensor", &astrai::amx_dot_products);
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "AstrAI kernels: test- and bench-only operators"; }
