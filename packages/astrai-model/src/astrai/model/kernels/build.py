"""Compile the native CPU kernels once per machine, cache them, and load them.

The C++ sources in `csrc/` are built on first use with torch's own extension builder
(`torch.utils.cpp_extension.load`, ninja), into a cache folder keyed by a hash of the sources,
the compiler flags and the torch version, so a changed source or a new torch rebuilds and an
unchanged one loads in milliseconds. A built library in that folder is imported directly, not
through the builder: every install of the same sources (an editable checkout, a wheel in another
virtualenv) shares one build instead of recompiling because its source paths differ. Where the build cannot happen (no compiler, no AVX2) the
caller falls back to the pure-torch path; `load_native` says why in one log line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger("astrai.model.kernels")

CSRC = Path(__file__).parent / "csrc"
MODULE_NAME = "astrai_native_kernels"
# Explicit instruction sets, never -march=native: a VM may advertise what it cannot run.
CFLAGS = ["-O3", "-std=c++17", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-DNDEBUG"]
LDFLAGS = ["-fopenmp"]  # resolves to the libgomp torch already loaded (same soname)


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or run here; the message says why."""


def sources() -> list[Path]:
    return sorted(p for p in CSRC.iterdir() if p.suffix == ".cpp")


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(torch.__version__.encode())
    digest.update(sys.version.encode())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    for path in sorted(paths + [p for p in CSRC.iterdir() if p.suffix == ".h"]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("ASTRAI_KERNEL_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "astrai" / "kernels"


def check_machine() -> None:
    """Raise NativeUnavailable unless this machine can build and run the kernels."""
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "AMD64"):
        raise NativeUnavailable(f"native kernels target x86-64 Linux, this is {sys.platform}/{os.uname().machine}")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise NativeUnavailable(f"the CPU lacks AVX2/FMA (torch reports {capability})")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        raise NativeUnavailable("no C++ compiler found (install g++)")
    if shutil.which("ninja") is None:
        try:
            import ninja  # the PyPI wheel ships the binary

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            raise NativeUnavailable("ninja is not installed (pip install ninja)") from None


def load_native() -> ModuleType:
    """Build (if needed) and import the extension; NativeUnavailable says why it cannot."""
    check_machine()
    from torch.utils import cpp_extension

    paths = sources()
    folder = cache_root() / f"{MODULE_NAME}-{_fingerprint(paths)}"
    folder.mkdir(parents=True, exist_ok=True)
    built = sorted(folder.glob(f"{MODULE_NAME}*.so"))
    if built:
        try:
            return _import_built(built[0])
        except ImportError as exc:  # a partial or foreign file: rebuild below
            log.info("rebuilding the native CPU kernels (%s)", exc)
    log.info("compiling AstrAI's native CPU kernels (first use on this machine, about a minute) into %s", folder)
    start = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=MODULE_NAME, sources=[str(p) for p in paths], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS,
            build_directory=str(folder), verbose=False, is_python_module=True,
        )
    except (RuntimeError, OSError, ImportError, Exception) as exc:  # compiler errors surface as RuntimeError
        raise NativeUnavailable(f"building the native kernels failed: {str(exc).strip().splitlines()[-1:]}") from exc
    log.info("native CPU kernels compiled in %.0f s", time.perf_counter() - start)
    return module


def _import_built(path: Path) -> ModuleType:
    """Import an already built extension library (what cpp_extension.load does after a build)."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
