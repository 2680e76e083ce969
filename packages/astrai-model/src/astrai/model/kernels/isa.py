"""Which instruction-set variant of the native kernels this machine runs.

Variants, from plain to best:

- ``avx2``: AVX2 + FMA + F16C (every x86-64 server since ~2015).
- ``avx512``: AVX-512 F/BW/VL/DQ with VNNI (one ``vpdpbusd`` per int8 dot product) and BF16
  (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later; Ice Lake and Cascade Lake
  lack AVX512-BF16 and run avx2).
- ``amx``: the ``avx512`` variant plus AMX-INT8 tiles for large batches (Intel Sapphire Rapids and
  later).

A variant is *supported* when CPUID lists its instructions, the OS saves their register state
(XCR0), Linux grants AMX tile data (``arch_prctl``), and a probe executes them in a child process
(so a VM that advertises what it cannot run falls back instead of dying with SIGILL): the small C
program ``csrc/probe/isa_probe.c``, built once per machine. It is *verified* when its tests have
passed on a CPU that has it (``VERIFIED``); an unverified variant runs only when asked for with
``ASTRAI_KERNELS_ISA``. The automatic choice is the best supported and verified variant.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("avx2", "avx512", "amx")  # plain to best
ENV_VARIABLE = "ASTRAI_KERNELS_ISA"

_COMMON = ["-mavx2", "-mfma", "-mf16c"]
_AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx512bf16"]
# Compiler flags per variant: explicit instruction sets, never -march=native (a VM may advertise
# what it cannot run). Each variant's code is selected in C++ by its ASTRAI_ISA_* macro.
COMPILE_FLAGS: dict[str, list[str]] = {
    "avx2": _COMMON + ["-DASTRAI_ISA_AVX2"],
    "avx512": _COMMON + _AVX512 + ["-DASTRAI_ISA_AVX512"],
    "amx": _COMMON + _AVX512 + ["-mamx-tile", "-mamx-int8", "-mamx-bf16", "-DASTRAI_ISA_AVX512", "-DASTRAI_ISA_AMX"],
}
# A test-only build, never chosen or forced: the amx variant's code with its tile instructions run
# in software (csrc/isa/amx_emulation.h), so every machine that runs avx512 checks that code's
# shapes and arithmetic against the same oracles; it proves nothing about speed or AMX hardware.
AMX_EMULATION = "amx_emulated"
EMULATION_FLAGS: dict[str, list[str]] = {
    AMX_EMULATION: _COMMON + _AVX512 + ["-DASTRAI_ISA_AVX512", "-DASTRAI_ISA_AMX", "-DASTRAI_AMX_EMULATION"],
}
# Variants whose tests have passed on hardware that has them (and where): the automatic choice
# picks only these. Record a variant here once a machine with its CPU has run the suite.
VERIFIED: dict[str, str] = {
    "avx2": "AMD EPYC Zen 3 (2 cores, KVM), AMD EPYC Zen 4, AMD EPYC Zen 5",
    "avx512": "AMD EPYC Zen 4 (2 cores, KVM: AVX-512 F/BW/VL/DQ/VNNI/BF16), AMD EPYC Zen 5 (2 cores, KVM: full-width 512-bit)",
}

PROBE_SOURCE = Path(__file__).parent / "csrc" / "probe" / "isa_probe.c"


class IsaError(ValueError):
    """ASTRAI_KERNELS_ISA names an unknown variant, or one this machine cannot run."""


@dataclass(frozen=True)
class Support:
    """What the probe found for one variant."""

    variant: str
    supported: bool
    reason: str  # "probe ran", or why not


def _probe_binary(cache: Path) -> Path:
    """The probe program, built once per probe source and compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc / gcc) found")
    digest = hashlib.sha256(PROBE_SOURCE.read_bytes() + compiler.encode()).hexdigest()[:16]
    binary = cache / f"isa_probe-{digest}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([compiler, "-O1", "-o", str(partial), str(PROBE_SOURCE)], check=True,
                       capture_output=True, timeout=120)
        partial.replace(binary)
    return binary


@functools.lru_cache(maxsize=1)
def probe(cache: Path | None = None) -> tuple[Support, ...]:
    """Run the probe (once per process); every variant's support, in VARIANTS order."""
    from .build import cache_root

    try:
        binary = _probe_binary(cache or cache_root())
        output = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        return tuple(Support(v, False, f"the CPU probe could not run: {str(detail).strip()[:200]}") for v in VARIANTS)
    found: dict[str, Support] = {}
    for line in output.splitlines():
        name, verdict, reason = (line.split(" ", 2) + ["", ""])[:3]
        if name in VARIANTS:
            found[name] = Support(name, verdict == "yes", reason)
    return tuple(found.get(v, Support(v, False, "the probe did not report it")) for v in VARIANTS)


def support_of(variant: str) -> Support:
    """The probe's verdict on one variant of VARIANTS."""
    return next(s for s in probe() if s.variant == variant)


def supported_variants() -> tuple[str, ...]:
    return tuple(s.variant for s in probe() if s.supported)


def choose_variant() -> str | None:
    """The variant to run: ASTRAI_KERNELS_ISA if set (IsaError if unknown or unsupported),
    else the best supported and verified one; None where none is supported."""
    forced = os.environ.get(ENV_VARIABLE, "").strip().lower()
    support = {s.variant: s for s in probe()}
    if forced:
        if forced not in VARIANTS:
            raise IsaError(f"{ENV_VARIABLE}={forced!r} is not a kernel variant; valid: {', '.join(VARIANTS)}")
        if not support[forced].supported:
            runnable = ", ".join(supported_variants()) or "none"
            raise IsaError(f"{ENV_VARIABLE}={forced}: this machine cannot run it ({support[forced].reason}); "
                           f"it runs: {runnable}")
        return forced
    usable = [v for v in VARIANTS if support[v].supported and v in VERIFIED]
    return usable[-1] if usable else None


def describe_support() -> str:
    """One line for logs: each variant and whether it runs here."""
    return "; ".join(f"{s.variant}: {'yes' if s.supported else 'no'} ({s.reason})" for s in probe())


__all__ = ["AMX_EMULATION", "COMPILE_FLAGS", "EMULATION_FLAGS", "ENV_VARIABLE", "IsaError", "Support", "VARIANTS",
           "VERIFIED", "choose_variant", "describe_support", "probe", "support_of", "supported_variants"]
