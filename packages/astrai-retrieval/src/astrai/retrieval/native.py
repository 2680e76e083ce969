"""Build and load the HNSW kernels (csrc/hnsw.cpp): compiled on first use, cached, loaded with ctypes.

Plain C++ (no torch, no Python headers), built with the system compiler into a cache folder
keyed by a hash of the source, the flags and the compiler's version; the library is written to
a temporary name and renamed, so concurrent first uses never load half a file. No ISA flag is
passed: the distance functions carry their own target attributes (AVX2+FMA, AVX-512F) and the
library picks the best the CPU runs (`ASTRAI_RETRIEVAL_ISA=scalar|avx2|avx512` caps it).
Where nothing can be built, `load()` returns None and logs why once; the caller then runs the
Python twin in graph.py. `ASTRAI_RETRIEVAL_NATIVE=0` forces that path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("astrai.retrieval.native")

SOURCE = Path(__file__).parent / "csrc" / "hnsw.cpp"
LIBRARY = "libastrai_hnsw.so"
CFLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-DNDEBUG"]
ISA_CAPS = {"scalar": 0, "avx2": 1, "avx512": 2}
ISA_NAMES = {0: "scalar", 1: "avx2", 2: "avx512"}


class AstraiGraph(ctypes.Structure):
    """Mirror of `struct AstraiGraph` in csrc/hnsw.cpp (field order matters)."""

    _fields_ = [
        ("vectors", ctypes.c_void_p), ("levels", ctypes.c_void_p), ("upper", ctypes.c_void_p),
        ("links0", ctypes.c_void_p), ("count0", ctypes.c_void_p), ("links_up", ctypes.c_void_p),
        ("count_up", ctypes.c_void_p), ("deleted", ctypes.c_void_p),
        ("dim", ctypes.c_int32), ("M", ctypes.c_int32), ("M0", ctypes.c_int32), ("metric", ctypes.c_int32),
        ("n", ctypes.c_int32), ("entry", ctypes.c_int32), ("max_level", ctypes.c_int32),
        ("num_deleted", ctypes.c_int32),
    ]


class NativeHNSW:
    """The loaded library's functions, typed."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        graph = ctypes.POINTER(AstraiGraph)
        i32, ptr = ctypes.c_int32, ctypes.c_void_p
        lib.astrai_hnsw_isa.argtypes, lib.astrai_hnsw_isa.restype = [ctypes.c_int], ctypes.c_int
        lib.astrai_hnsw_insert.argtypes, lib.astrai_hnsw_insert.restype = [graph, i32, i32, i32, i32], None
        lib.astrai_hnsw_search.argtypes = [graph, ptr, i32, i32, i32, ptr, ptr, ptr]
        lib.astrai_hnsw_search.restype = None
        lib.astrai_hnsw_repair.argtypes, lib.astrai_hnsw_repair.restype = [graph, i32], None
        self.lib = lib
        cap = ISA_CAPS.get(os.environ.get("ASTRAI_RETRIEVAL_ISA", "avx512").lower(), 2)
        self.isa = ISA_NAMES[lib.astrai_hnsw_isa(cap)]
        self.insert = lib.astrai_hnsw_insert
        self.search = lib.astrai_hnsw_search
        self.repair = lib.astrai_hnsw_repair


def cache_root() -> Path:
    base = os.environ.get("ASTRAI_KERNEL_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "astrai" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _fingerprint(compiler: str) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    digest.update(version.encode())
    return digest.hexdigest()[:16]


def build() -> Path:
    """The compiled library's path, building it if needed; RuntimeError says why it cannot."""
    if sys.platform != "linux":
        raise RuntimeError(f"native HNSW kernels are built on Linux only (this is {sys.platform})")
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    folder = cache_root() / f"astrai_retrieval_hnsw-{_fingerprint(compiler)}"
    target = folder / LIBRARY
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *CFLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed: {result.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_lock = threading.Lock()
_loaded: NativeHNSW | None = None
_tried = False


def load() -> NativeHNSW | None:
    """The native kernels, or None (logged once with the reason) where they cannot run."""
    global _loaded, _tried
    with _lock:
        if _tried:
            return _loaded
        _tried = True
        if os.environ.get("ASTRAI_RETRIEVAL_NATIVE", "1") == "0":
            log.info("HNSW runs in Python: ASTRAI_RETRIEVAL_NATIVE=0")
            return None
        try:
            _loaded = NativeHNSW(ctypes.CDLL(str(build())))
        except (RuntimeError, OSError, AttributeError, subprocess.SubprocessError) as exc:
            log.warning("HNSW runs in Python (slow): the native kernels are unavailable: %s", exc)
            return None
        log.info("HNSW native kernels loaded (%s distances)", _loaded.isa)
        return _loaded
