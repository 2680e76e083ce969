// The Python module of the native kernels. Kernels register themselves as torch operators
// (TORCH_LIBRARY_FRAGMENT(astrai, ...) in their own files, callable as torch.ops.astrai.*);
// this file binds what must run without the GIL: the fused decoder step.
#include <torch/extension.h>

#include "forward.h"
#include "parallel.h"

namespace py = pybind11;
using astrai::DecoderLayerWeights;
using astrai::DecoderShape;
using astrai::LinearWeight;
using astrai::NativeDecoder;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "AstrAI native CPU kernels";
  m.def("num_threads", []() { return astrai::num_threads(); }, "threads the kernels parallelise over");

  py::class_<LinearWeight>(m, "LinearWeight")
      .def(py::init([](int64_t qtype, int64_t out_features, int64_t in_features, std::optional<at::Tensor> packed,
                       std::optional<at::Tensor> dense, std::optional<at::Tensor> bias) {
             LinearWeight w;
             w.qtype = qtype;
             w.out_features = out_features;
             w.in_features = in_features;
             if (packed) w.packed = *packed;
             if (dense) w.dense = *dense;
             w.bias = bias;
             w.validate("LinearWeight");
             return w;
           }),
           py::arg("qtype"), py::arg("out_features"), py::arg("in_features"), py::arg("packed") = py::none(),
           py::arg("dense") = py::none(), py::arg("bias") = py::none());

  py::class_<DecoderLayerWeights>(m, "DecoderLayerWeights")
      .def(py::init([](at::Tensor input_norm, at::Tensor post_attention_norm, LinearWeight qkv, LinearWeight o,
                       LinearWeight gate_up, LinearWeight down, std::optional<at::Tensor> q_norm,
                       std::optional<at::Tensor> k_norm) {
             DecoderLayerWeights layer;
             layer.input_norm = input_norm;
             layer.post_attention_norm = post_attention_norm;
             layer.qkv = std::move(qkv);
             layer.o = std::move(o);
             layer.gate_up = std::move(gate_up);
             layer.down = std::move(down);
             layer.q_norm = q_norm;
             layer.k_norm = k_norm;
             return layer;
           }),
           py::arg("input_norm"), py::arg("post_attention_norm"), py::arg("qkv"), py::arg("o"), py::arg("gate_up"),
           py::arg("down"), py::arg("q_norm") = py::none(), py::arg("k_norm") = py::none());

  py::class_<DecoderShape>(m, "DecoderShape")
      .def(py::init([](int64_t hidden, int64_t intermediate, int64_t num_heads, int64_t num_kv_heads,
                       int64_t head_dim, int64_t vocab, double rms_norm_eps) {
             return DecoderShape{hidden, intermediate, num_heads, num_kv_heads, head_dim, vocab, rms_norm_eps};
           }),
           py::arg("hidden"), py::arg("intermediate"), py::arg("num_heads"), py::arg("num_kv_heads"),
           py::arg("head_dim"), py::arg("vocab"), py::arg("rms_norm_eps"));

  py::class_<NativeDecoder>(m, "NativeDecoder")
      .def(py::init<DecoderShape, LinearWeight, std::vector<DecoderLayerWeights>, at::Tensor, LinearWeight>(),
           py::arg("shape"), py::arg("embedding"), py::arg("layers"), py::arg("final_norm"), py::arg("head"))
      .def("forward", &NativeDecoder::forward, py::call_guard<py::gil_scoped_release>(),
           "one ragged step (ForwardBatch tensors, K/V caches, RoPE tables) -> float32 logits [R, vocab]")
      .def_property_readonly("num_layers", &NativeDecoder::num_layers)
      .def("set_profiling", &NativeDecoder::set_profiling, "time each kernel kind (resets the sums)")
      .def("profile", &NativeDecoder::profile, "[(kernel kind, seconds summed)], starting with ('steps', n)");
}
