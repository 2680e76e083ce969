// The Python module of the native kernels. Kernels register themselves as torch operators
// (TORCH_LIBRARY_FRAGMENT(astrai, ...) in their own files, callable as torch.ops.astrai.*);
// this file holds the pybind11 entry points that must run without the GIL.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "AstrAI native CPU kernels";
  m.def("num_threads", []() { return at::get_num_threads(); }, "threads the kernels parallelise over");
}
