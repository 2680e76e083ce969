"""Compile the native CPU kernels once per machine and variant, cache them, and load them.

The C++ sources in `csrc/` are built with torch's own extension builder
(`torch.utils.cpp_extension.load`, ninja) once per instruction-set variant (`isa.VARIANTS`), each
into a cache folder keyed by a hash of the sources, the variant's compiler flags and the torch
version: a changed source or a new torch rebuilds, an unchanged one loads in milliseconds. A
built library in that folder is imported directly, not through the builder, so every install of
the same sources (an editable checkout, a wheel in another virtualenv) shares one build. Only the
variant a process uses is built; tests and benches build the others on demand.

Each variant registers its torch operators under its own namespace (`torch.ops.astrai_<variant>`)
so several can live in one process. Test- and bench-only operators are a second, small extension
per variant (`csrc/testing/`), linked against the production library.
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

from .isa import COMPILE_FLAGS, EMULATION_FLAGS, VARIANTS

log = logging.getLogger("astrai.model.kernels")

CSRC = Path(__file__).parent / "csrc"
TESTING_SRC = CSRC / "testing"
BASE_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-DNDEBUG"]
LDFLAGS = ["-fopenmp"]  # resolves to the libgomp torch already loaded (same soname)


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or run here; the message says why."""


def module_name(variant: str) -> str:
    return f"astrai_kernels_{variant}"


def ops_namespace(variant: str) -> str:
    """The torch.ops namespace of a variant's production operators."""
    return f"astrai_{variant}"


def testing_namespace(variant: str) -> str:
    return f"astrai_{variant}_testing"


def sources() -> list[Path]:
    return sorted(p for p in CSRC.iterdir() if p.suffix == ".cpp")


def _headers() -> list[Path]:
    return sorted(p for p in CSRC.rglob("*.h"))


def _fingerprint(paths: list[Path], flags: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(torch.__version__.encode())
    digest.update(sys.version.encode())
    digest.update(" ".join(flags + LDFLAGS).encode())
    for path in sorted(paths + _headers()):
        digest.update(str(path.relative_to(CSRC)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("ASTRAI_KERNEL_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "astrai" / "kernels"


def check_machine() -> None:
    """Raise NativeUnavailable unless this machine can build the kernels at all."""
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "AMD64"):
        raise NativeUnavailable(f"native kernels target x86-64 Linux, this is {sys.platform}/{os.uname().machine}")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        raise NativeUnavailable("no C++ compiler found (install g++)")
    if shutil.which("ninja") is None:
        try:
            import ninja  # the PyPI wheel ships the binary

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            raise NativeUnavailable("ninja is not installed (pip install ninja)") from None


def _variant_flags(variant: str, namespace: str) -> list[str]:
    """A variant's flags, or a test-only emulation build's (`isa.EMULATION_FLAGS`)."""
    flags = COMPILE_FLAGS.get(variant) or EMULATION_FLAGS.get(variant)
    if flags is None:
        raise NativeUnavailable(f"unknown kernel variant {variant!r} (valid: {', '.join(VARIANTS)})")
    return BASE_FLAGS + flags + [f"-DASTRAI_OPS={namespace}"]


def _build(name: str, paths: list[Path], flags: list[str], ldflags: list[str], what: str) -> tuple[ModuleType, Path]:
    """Import `name` from its cache folder, compiling it there first if needed."""
    from torch.utils import cpp_extension

    folder = cache_root() / f"{name}-{_fingerprint(paths, flags)}"
    folder.mkdir(parents=True, exist_ok=True)
    built = sorted(folder.glob(f"{name}*.so"))
    if built:
        try:
            return _import_built(name, built[0]), built[0]
        except ImportError as exc:  # a partial or foreign file: rebuild below
            log.info("rebuilding %s (%s)", name, exc)
    log.info("compiling %s (first use on this machine, about a minute) into %s", what, folder)
    start = time.perf_counter()
    try:
        # Copies: the builder appends torch's own link flags to the list it is given, and a
        # grown LDFLAGS would change every later fingerprint in this process (a cache miss and a
        # needless compile in every process after it).
        module = cpp_extension.load(
            name=name, sources=[str(p) for p in paths], extra_cflags=list(flags), extra_ldflags=list(ldflags),
            extra_include_paths=[str(CSRC)], build_directory=str(folder), verbose=False, is_python_module=True,
        )
    except Exception as exc:  # compiler errors surface as RuntimeError, others as OSError / ImportError
        raise NativeUnavailable(f"building {what} failed: {str(exc).strip().splitlines()[-1:]}") from exc
    log.info("%s compiled in %.0f s", what, time.perf_counter() - start)
    return module, sorted(folder.glob(f"{name}*.so"))[0]


_built: dict[str, tuple[ModuleType, Path]] = {}


def load_native(variant: str) -> ModuleType:
    """Build (if needed) and import one variant's production extension."""
    check_machine()
    if variant not in _built:
        flags = _variant_flags(variant, ops_namespace(variant))
        _built[variant] = _build(module_name(variant), sources(), flags, LDFLAGS,
                                 f"AstrAI's native CPU kernels ({variant})")
    return _built[variant][0]


def load_testing(variant: str) -> ModuleType:
    """The test- and bench-only operators of a variant, linked against its production library."""
    load_native(variant)
    library = _built[variant][1]
    key = f"{variant}/testing"
    if key not in _built:
        paths = sorted(p for p in TESTING_SRC.iterdir() if p.suffix == ".cpp")
        flags = _variant_flags(variant, testing_namespace(variant)) + [f"-DASTRAI_PRODUCTION_OPS={ops_namespace(variant)}"]
        ldflags = LDFLAGS + [f"-L{library.parent}", f"-l:{library.name}", f"-Wl,-rpath,{library.parent}"]
        _built[key] = _build(f"{module_name(variant)}_testing", paths, flags + [f"-DASTRAI_LIBRARY={library.parent.name}"],
                             ldflags, f"the test-only kernels ({variant})")
    return _built[key][0]


def _import_built(name: str, path: Path) -> ModuleType:
    """Import an already built extension library (what cpp_extension.load does after a build)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
