#!/usr/bin/env bash
# Install the heavy peers used only by the benchmark suite into the dev venv (.venv).
#
# llama-cpp-python's default native build selects an AMX code path that crashes on this
# CPU, so we pin the instruction sets explicitly and never reuse a cached wheel.
# The build takes about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
"$PY" -m pip install --no-cache-dir llama-cpp-python
# progress bars and the profiler used by the suite
"$PY" -m pip install tqdm py-spy
"$PY" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
