// The Python module of one kernel variant, and every production torch operator it registers
// (the one place ops are declared). The build names the operator namespace per variant
// (ASTRAI_OPS = astrai_avx2, astrai_avx512, ...), so several variants load side by side;
// test- and bench-only operators live in testing/ instead.
#include <torch/extension.h>
#include <torch/library.h>

#include "attention.h"
#include "forward.h"
#include "ops.h"
#include "parallel.h"
#include "qlinear.h"
#include "quant_pack.h"
#include "sampling.h"

#ifndef ASTRAI_OPS
#error "ASTRAI_OPS (the operator namespace) is set by astrai.model.kernels.build"
#endif

namespace {

at::Tensor qlinear_op(const at::Tensor& x, const at::Tensor& packed, int64_t qtype, int64_t N, int64_t K,
                      const std::optional<at::Tensor>& bias) {
  return astrai::qlinear(x, packed, astrai::checked_qtype(qtype), N, K, bias);
}

at::Tensor qlinear_out_op(const at::Tensor& x, const at::Tensor& packed, int64_t qtype, int64_t N, int64_t K,
                          const std::optional<at::Tensor>& bias, at::Tensor out) {
  astrai::qlinear(x, packed, astrai::checked_qtype(qtype), N, K, bias, out);
  return out;
}

int64_t packed_nbytes_op(int64_t qtype, int64_t N, int64_t K) {
  const astrai::QType type = astrai::checked_qtype(qtype);
  const int64_t block = astrai::layout_of(type).gguf_block_weights;
  TORCH_CHECK(N > 0 && K > 0 && K % block == 0, "qlinear_packed_nbytes: need N > 0 and K a positive multiple of ",
              block);
  return astrai::packed_nbytes(type, N, K);
}

at::Tensor pack_gguf_op(const at::Tensor& raw, int64_t qtype, int64_t K) {
  return astrai::pack_gguf(raw, astrai::checked_qtype(qtype), K);
}

at::Tensor dequantize_op(const at::Tensor& packed, int64_t qtype, int64_t N, int64_t K) {
  return astrai::dequantize_packed(packed, astrai::checked_qtype(qtype), N, K);
}

at::Tensor embedding_rows_packed_op(const at::Tensor& packed, int64_t qtype, int64_t n, int64_t k,
                                    const at::Tensor& ids) {
  astrai::LinearWeight table;
  table.qtype = qtype;
  table.out_features = n;
  table.in_features = k;
  table.packed = packed;
  table.validate("embedding_rows_packed");
  return astrai::embedding_rows(table, ids);
}

}  // namespace

TORCH_LIBRARY(ASTRAI_OPS, m) {
  m.def("qlinear(Tensor x, Tensor packed, int qtype, int out_features, int in_features, Tensor? bias=None) -> Tensor",
        &qlinear_op);
  m.def("qlinear_out(Tensor x, Tensor packed, int qtype, int out_features, int in_features, Tensor? bias, "
        "Tensor(a!) out) -> Tensor(a!)",
        &qlinear_out_op);
  m.def("qlinear_packed_nbytes(int qtype, int out_features, int in_features) -> int", &packed_nbytes_op);
  m.def("pack_gguf(Tensor raw, int qtype, int in_features) -> Tensor", &pack_gguf_op);
  m.def("qlinear_dequantize(Tensor packed, int qtype, int out_features, int in_features) -> Tensor", &dequantize_op);
  m.def("embedding_rows_packed(Tensor packed, int qtype, int out_features, int in_features, Tensor ids) -> Tensor",
        &embedding_rows_packed_op);
  m.def("paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
        "Tensor query_start_loc, float scale, int window, Tensor(a!) out) -> ()",
        &astrai::paged_attention);
  m.def("kv_write(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()",
        &astrai::kv_write);
  m.def("rms_norm(Tensor x, Tensor w, float eps, Tensor(a!) out) -> ()", &astrai::rms_norm);
  m.def("add_rms_norm(Tensor(a!) x, Tensor(b!) residual, Tensor w, float eps) -> ()", &astrai::add_rms_norm);
  m.def("head_rms_norm(Tensor(a!) x, Tensor w, float eps) -> ()", &astrai::head_rms_norm);
  m.def("rotary(Tensor(a!) qk, Tensor positions, Tensor cos, Tensor sin) -> ()", &astrai::rotary);
  m.def("silu_mul(Tensor gate_up, Tensor(a!) out) -> ()", &astrai::silu_mul);
  m.def("gelu_tanh_mul(Tensor gate_up, Tensor(a!) out) -> ()", &astrai::gelu_tanh_mul);
  m.def("sample_temperature(Tensor logits, Tensor temperature, Tensor uniform) -> Tensor", &astrai::sample_temperature);
}

namespace py = pybind11;
using astrai::DecoderLayerWeights;
using astrai::DecoderShape;
using astrai::LinearWeight;
using astrai::NativeDecoder;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "AstrAI native CPU kernels";
  m.def("num_threads", []() { return astrai::num_threads(); }, "threads the kernels parallelise over");

  py::class_<LinearWeight>(m, "LinearWeight", py::module_local())
      .def(py::init([](int64_t qtype, int64_t out_features, int64_t in_features, std::optional<at::Tensor> packed,
                       std::optional<at::Tensor> dense, std::optional<at::Tensor> bias,
                       std::vector<LinearWeight> parts) {
             LinearWeight w;
             w.qtype = qtype;
             w.out_features = out_features;
             w.in_features = in_features;
             if (packed) w.packed = *packed;
             if (dense) w.dense = *dense;
             w.bias = bias;
             w.parts = std::move(parts);
             w.validate("LinearWeight");
             return w;
           }),
           py::arg("qtype"), py::arg("out_features"), py::arg("in_features"), py::arg("packed") = py::none(),
           py::arg("dense") = py::none(), py::arg("bias") = py::none(),
           py::arg("parts") = std::vector<LinearWeight>());

  py::class_<DecoderLayerWeights>(m, "DecoderLayerWeights", py::module_local())
      .def(py::init([](at::Tensor input_norm, at::Tensor mlp_norm, LinearWeight qkv, LinearWeight o,
                       LinearWeight gate_up, LinearWeight down, std::optional<at::Tensor> q_norm,
                       std::optional<at::Tensor> k_norm, std::optional<at::Tensor> attn_out_norm,
                       std::optional<at::Tensor> mlp_out_norm, int64_t window, int64_t rope) {
             DecoderLayerWeights layer;
             layer.input_norm = input_norm;
             layer.mlp_norm = mlp_norm;
             layer.qkv = std::move(qkv);
             layer.o = std::move(o);
             layer.gate_up = std::move(gate_up);
             layer.down = std::move(down);
             layer.q_norm = q_norm;
             layer.k_norm = k_norm;
             layer.attn_out_norm = attn_out_norm;
             layer.mlp_out_norm = mlp_out_norm;
             layer.window = window;
             layer.rope = rope;
             return layer;
           }),
           py::arg("input_norm"), py::arg("mlp_norm"), py::arg("qkv"), py::arg("o"), py::arg("gate_up"),
           py::arg("down"), py::arg("q_norm") = py::none(), py::arg("k_norm") = py::none(),
           py::arg("attn_out_norm") = py::none(), py::arg("mlp_out_norm") = py::none(), py::arg("window") = 0,
           py::arg("rope") = 0);

  py::class_<DecoderShape>(m, "DecoderShape", py::module_local())
      .def(py::init([](int64_t hidden, int64_t intermediate, int64_t num_heads, int64_t num_kv_heads,
                       int64_t head_dim, int64_t vocab, double rms_norm_eps, double attention_scale,
                       double embedding_scale, const std::string& activation) {
             TORCH_CHECK(activation == "silu" || activation == "gelu_tanh",
                         "DecoderShape: activation must be silu or gelu_tanh, got ", activation);
             return DecoderShape{hidden, intermediate, num_heads, num_kv_heads, head_dim, vocab, rms_norm_eps,
                                 attention_scale, embedding_scale,
                                 activation == "silu" ? astrai::Activation::kSilu : astrai::Activation::kGeluTanh};
           }),
           py::arg("hidden"), py::arg("intermediate"), py::arg("num_heads"), py::arg("num_kv_heads"),
           py::arg("head_dim"), py::arg("vocab"), py::arg("rms_norm_eps"), py::arg("attention_scale") = 0.0,
           py::arg("embedding_scale") = 1.0, py::arg("activation") = "silu");

  py::class_<NativeDecoder>(m, "NativeDecoder", py::module_local())
      .def(py::init<DecoderShape, LinearWeight, std::vector<DecoderLayerWeights>, at::Tensor, LinearWeight>(),
           py::arg("shape"), py::arg("embedding"), py::arg("layers"), py::arg("final_norm"), py::arg("head"))
      .def("forward", &NativeDecoder::forward, py::arg("token_ids"), py::arg("positions"), py::arg("slot_mapping"),
           py::arg("block_tables"), py::arg("context_lens"), py::arg("query_start_loc"), py::arg("logits_indices"),
           py::arg("k_caches"), py::arg("v_caches"), py::arg("cos"), py::arg("sin"), py::arg("local_cos") = py::none(),
           py::arg("local_sin") = py::none(), py::call_guard<py::gil_scoped_release>(),
           "one ragged step (ForwardBatch tensors, K/V caches, RoPE tables) -> float32 logits [R, vocab]")
      .def_property_readonly("num_layers", &NativeDecoder::num_layers)
      .def("set_profiling", &NativeDecoder::set_profiling, "time each kernel kind (resets the sums)")
      .def("profile", &NativeDecoder::profile, "[(kernel kind, seconds summed)], starting with ('steps', n)");
}
