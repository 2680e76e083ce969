#!/usr/bin/env bash
# Install the benchmark's peers into bench/.peers/ (gitignored). Bench set-up only, never CI.
#
#   bench/.peers/llama.cpp-bin/   llama-bench, llama-batched-bench, llama-server, llama-tokenize,
#                                 llama-perplexity, llama-quantize, llama-lookup, llama-simple, built from the
#                                 llama.cpp source that the llama-cpp-python sdist vendors
#   bench/.peers/guidellm-venv/   the guidellm client in its own venv (heavy dependencies)
#   .venv: py-spy and tqdm for the profile section and progress bars
#
# The llama.cpp build picks its instruction sets from /proc/cpuinfo, never GGML_NATIVE (which
# dies with SIGILL on these VMs): AVX-512 (+VNNI, +BF16) where the CPU has all of them, else
# AVX2 + FMA + F16C + BMI2. About 8 minutes on 2 cores.
#
# To reuse an existing build of exactly this configuration instead of rebuilding, point
# ASTRAI_BENCH_REUSE_LLAMA_BUILD at its build folder (the one holding CMakeCache.txt and bin/);
# the script checks the source version and every cmake option below, and links its bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=bench/.peers
SDIST_VERSION=0.3.36            # llama-cpp-python; its vendor/llama.cpp is what we build
GUIDELLM_VERSION=0.8.1
TORCH_VERSION=2.13.0            # the local CPU wheel; an open range pulls CUDA wheels
# tokenize / perplexity / quantize / lookup: the model-coverage and speculation references
TARGETS=(llama-bench llama-batched-bench llama-server llama-tokenize llama-perplexity llama-quantize llama-lookup
         llama-simple)
mkdir -p "$PEERS"

cpu_has() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1"; }

if cpu_has avx512f && cpu_has avx512bw && cpu_has avx512_vnni && cpu_has avx512_bf16; then
  ISA=(-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX2=ON
       -DGGML_FMA=ON -DGGML_F16C=ON)
else
  ISA=(-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
CMAKE_FLAGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF "${ISA[@]}")
echo "llama.cpp cmake flags: ${CMAKE_FLAGS[*]}"

# Does the build folder $1 match this source version and these flags?
build_matches() {
  local build=$1 cache=$1/CMakeCache.txt flag key value
  [[ -f $cache ]] || { echo "no $cache"; return 1; }
  [[ $(cd "$build" && pwd -P) == */llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/* ]] ||
    { echo "$build is not from llama_cpp_python-$SDIST_VERSION"; return 1; }
  grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache" || { echo "$build was not generated with Ninja"; return 1; }
  for flag in "${CMAKE_FLAGS[@]}"; do
    [[ $flag == -D* ]] || continue
    key=${flag#-D}; value=${key#*=}; key=${key%%=*}
    grep -Eq "^$key:[A-Z]+=$value\$" "$cache" || { echo "$build: $key is not $value"; return 1; }
  done
  for target in "${TARGETS[@]}"; do
    [[ -x $build/bin/$target ]] || { echo "$build/bin/$target is missing"; return 1; }
  done
}

if [[ -n ${ASTRAI_BENCH_REUSE_LLAMA_BUILD:-} ]]; then
  build_matches "$ASTRAI_BENCH_REUSE_LLAMA_BUILD" || { echo "refusing to reuse it; unset the variable to build"; exit 1; }
  ln -sfn "$(cd "$ASTRAI_BENCH_REUSE_LLAMA_BUILD" && pwd -P)/bin" "$PEERS/llama.cpp-bin"
  echo "reusing $ASTRAI_BENCH_REUSE_LLAMA_BUILD"
else
  SRC=$PEERS/llama_cpp_python-$SDIST_VERSION
  if [[ ! -d $SRC ]]; then
    .venv/bin/python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$SDIST_VERSION" -d "$PEERS"
    tar -xzf "$PEERS/llama_cpp_python-$SDIST_VERSION.tar.gz" -C "$PEERS"
  fi
  LLAMA=$SRC/vendor/llama.cpp
  cmake -S "$LLAMA" -B "$LLAMA/build" "${CMAKE_FLAGS[@]}"
  cmake --build "$LLAMA/build" --target "${TARGETS[@]}" -j "$(nproc)"
  build_matches "$LLAMA/build"
  ln -sfn "$(cd "$LLAMA/build" && pwd -P)/bin" "$PEERS/llama.cpp-bin"
fi
"$PEERS/llama.cpp-bin/llama-bench" --help > /dev/null

# guidellm, in its own venv so its dependencies never touch the project env
if [[ ! -x $PEERS/guidellm-venv/bin/guidellm ]]; then
  python3 -m venv "$PEERS/guidellm-venv"
fi
"$PEERS/guidellm-venv/bin/python" -m pip install "guidellm==$GUIDELLM_VERSION" "torch==$TORCH_VERSION"
"$PEERS/guidellm-venv/bin/guidellm" --version

# the project env: the profiler and progress bars used by the suite
.venv/bin/python -m pip install py-spy tqdm
echo "peers ready in $PEERS"
