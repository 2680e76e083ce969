"""Where the peers live: llama.cpp's own tools and the guidellm client, built by
bench/setup_peers.sh into bench/.peers/ (or pointed at by environment variables)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
LLAMA_BIN_ENV = "ASTRAI_BENCH_LLAMA_CPP_BIN"
GUIDELLM_ENV = "ASTRAI_BENCH_GUIDELLM"
LLAMA_TOOLS = ("llama-bench", "llama-batched-bench", "llama-server")
# The cmake options that decide which kernels llama.cpp runs; recorded with every result.
_BUILD_KEYS = ("CMAKE_BUILD_TYPE", "BUILD_SHARED_LIBS", "GGML_NATIVE", "GGML_AVX", "GGML_AVX2", "GGML_FMA",
               "GGML_F16C", "GGML_BMI2", "GGML_AVX512", "GGML_AVX512_BF16", "GGML_AVX512_VNNI",
               "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16", "GGML_OPENMP", "LLAMA_CURL")


class PeerMissing(RuntimeError):
    """A peer tool is not installed; the message says how to get it."""


def llama_bin_dir() -> Path:
    """The folder holding llama-bench, llama-batched-bench and llama-server."""
    env = os.environ.get(LLAMA_BIN_ENV)
    return Path(env) if env else PEERS_DIR / "llama.cpp-bin"


def llama_tool(name: str) -> Path:
    path = llama_bin_dir() / name
    if not os.access(path, os.X_OK):
        raise PeerMissing(f"{path} not found: run bench/setup_peers.sh (or set {LLAMA_BIN_ENV} to a build/bin "
                          "folder of the same llama.cpp build)")
    return path


def guidellm_cli() -> Path:
    env = os.environ.get(GUIDELLM_ENV)
    path = Path(env) if env else PEERS_DIR / "guidellm-venv" / "bin" / "guidellm"
    if not os.access(path, os.X_OK):
        raise PeerMissing(f"{path} not found: run bench/setup_peers.sh (guidellm lives in its own venv; "
                          f"or set {GUIDELLM_ENV})")
    return path


@dataclass(frozen=True)
class LlamaBuild:
    bin_dir: str
    source: str | None  # the llama-cpp-python sdist the vendored source came from
    version: str | None  # `llama-server --version`: llama.cpp's version and commit
    options: dict[str, str]


def llama_build() -> LlamaBuild:
    """The build's cmake options (from its CMakeCache.txt next to bin/) and source version."""
    bin_dir = llama_bin_dir().resolve()
    build = bin_dir.parent
    options: dict[str, str] = {}
    cache = build / "CMakeCache.txt"
    if cache.exists():
        for line in cache.read_text(errors="replace").splitlines():
            match = re.match(r"^([A-Z0-9_]+):[A-Z]+=(.*)$", line)
            if match and match.group(1) in _BUILD_KEYS:
                options[match.group(1)] = match.group(2)
    source = next((p.name for p in build.parents if p.name.startswith("llama_cpp_python-")), None)
    return LlamaBuild(str(bin_dir), source, _version(), options)


def _version() -> str | None:
    try:
        proc = subprocess.run([str(llama_tool("llama-server")), "--version"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError, PeerMissing):
        return None
    found = re.search(r"version: (.+)", proc.stdout + proc.stderr)
    return found.group(1).strip() if found else None
