"""Native CPU kernels (C++, one build per instruction set) with a pure-torch twin for every op.

`native()` returns the kernels this process uses, or None where they cannot run here (then
every op runs its torch twin); which path and which instruction-set variant is in use is logged
once. `ASTRAI_KERNELS=torch` forces the pure-torch path, `ASTRAI_KERNELS=native` makes a failed
build an error instead of a fallback; `ASTRAI_KERNELS_ISA=avx2|avx512|amx` forces a variant
(see `isa`). Tests and benches reach any supported variant through `kernels_for(variant)`, and
the amx variant's code with software tiles through `amx_emulation()`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from .build import NativeUnavailable, load_native, load_testing, ops_namespace, testing_namespace
from .isa import (
    AMX_EMULATION,
    VARIANTS,
    IsaError,
    choose_variant,
    describe_support,
    support_of,
    supported_variants,
)

log = logging.getLogger("astrai.model.kernels")


@dataclass(frozen=True)
class Kernels:
    """One compiled variant: its Python module (LinearWeight, NativeDecoder, ...) and operators."""

    variant: str
    module: ModuleType

    @property
    def ops(self) -> Any:
        """Its production operators, `torch.ops.astrai_<variant>` (qlinear, paged_attention, ...)."""
        return getattr(torch.ops, ops_namespace(self.variant))

    def testing_ops(self) -> Any:
        """Test- and bench-only operators (built on first use, never in production)."""
        load_testing(self.variant)
        return getattr(torch.ops, testing_namespace(self.variant))


_lock = threading.Lock()
_state: dict[str, object] = {}


def kernels() -> Kernels | None:
    """The kernels this process uses, built on first call; None means: use the torch path."""
    with _lock:
        if "kernels" in _state:
            return _state["kernels"]  # type: ignore[return-value]
        mode = os.environ.get("ASTRAI_KERNELS", "auto").lower()
        chosen: Kernels | None = None
        if mode == "torch":
            log.info("ASTRAI_KERNELS=torch: using the pure-torch kernels")
            _state["reason"] = "disabled by ASTRAI_KERNELS=torch"
        else:
            try:
                chosen = _load_chosen()
                log.info("using AstrAI's native CPU kernels, variant %s (%s)", chosen.variant, describe_support())
            except IsaError:
                raise
            except NativeUnavailable as exc:
                if mode == "native":
                    raise
                log.warning("native CPU kernels unavailable, using the pure-torch path: %s", exc)
                _state["reason"] = str(exc)
        _state["kernels"] = chosen
        return chosen


def loaded_kernels() -> Kernels | None:
    """The kernels this process already uses, or None if it has not chosen any yet (or chose
    the torch path). Never builds: for callers that must not stall a running engine on a
    first compile."""
    with _lock:
        return _state.get("kernels")  # type: ignore[return-value]


def _load_chosen() -> Kernels:
    from .build import check_machine

    check_machine()
    variant = choose_variant()
    if variant is None:
        raise NativeUnavailable(f"no kernel variant runs on this CPU ({describe_support()})")
    return Kernels(variant, load_native(variant))


def native() -> ModuleType | None:
    """The chosen variant's extension module, or None (torch path)."""
    chosen = kernels()
    return None if chosen is None else chosen.module


def ops() -> Any:
    """The chosen variant's torch operators; call only where `native()` is not None."""
    chosen = kernels()
    if chosen is None:
        raise NativeUnavailable(native_unavailable_reason() or "native kernels are not in use")
    return chosen.ops


def kernel_variant() -> str:
    """"avx2" | "avx512" | "amx" for the native kernels in use, or "torch"."""
    chosen = kernels()
    return "torch" if chosen is None else chosen.variant


def kernels_for(variant: str) -> Kernels:
    """A given variant (tests, benches): NativeUnavailable if this machine cannot run or build it."""
    if variant not in VARIANTS:
        raise NativeUnavailable(f"unknown kernel variant {variant!r} (valid: {', '.join(VARIANTS)})")
    support = support_of(variant)
    if not support.supported:
        raise NativeUnavailable(f"this machine cannot run the {variant} kernels: {support.reason}")
    return Kernels(variant, load_native(variant))


def amx_emulation() -> Kernels:
    """The amx variant's code with its tile instructions run in software (tests only), on any
    machine that runs avx512: NativeUnavailable elsewhere."""
    support = support_of("avx512")
    if not support.supported:
        raise NativeUnavailable(f"the emulated amx build needs a CPU that runs avx512: {support.reason}")
    return Kernels(AMX_EMULATION, load_native(AMX_EMULATION))


def native_unavailable_reason() -> str | None:
    """Why `native()` returned None (None if it has not been called or succeeded)."""
    return _state.get("reason")  # type: ignore[return-value]


__all__ = ["IsaError", "Kernels", "NativeUnavailable", "VARIANTS", "amx_emulation", "kernel_variant", "kernels",
           "kernels_for", "loaded_kernels", "native", "native_unavailable_reason", "ops", "supported_variants"]
