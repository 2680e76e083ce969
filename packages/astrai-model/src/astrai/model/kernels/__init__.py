"""Native CPU kernels (C++ / AVX2) with a pure-torch twin for every operation.

`native()` returns the compiled extension module, or None where it cannot run here; which
path is in use is logged once. Set `ASTRAI_KERNELS=torch` to force the pure-torch path, or
`ASTRAI_KERNELS=native` to make a failed build an error instead of a fallback.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

from .build import NativeUnavailable, load_native

log = logging.getLogger("astrai.model.kernels")

_lock = threading.Lock()
_state: dict[str, object] = {}


def native() -> ModuleType | None:
    """The native kernel module, built on first call; None means: use the torch path."""
    with _lock:
        if "module" in _state:
            return _state["module"]  # type: ignore[return-value]
        mode = os.environ.get("ASTRAI_KERNELS", "auto").lower()
        module: ModuleType | None = None
        if mode == "torch":
            log.info("ASTRAI_KERNELS=torch: using the pure-torch kernels")
            _state["reason"] = "disabled by ASTRAI_KERNELS=torch"
        else:
            try:
                module = load_native()
                log.info("using AstrAI's native CPU kernels (AVX2)")
            except NativeUnavailable as exc:
                if mode == "native":
                    raise
                log.warning("native CPU kernels unavailable, using the pure-torch path: %s", exc)
                _state["reason"] = str(exc)
        _state["module"] = module
        return module


def native_unavailable_reason() -> str | None:
    """Why `native()` returned None (None if it has not been called or succeeded)."""
    return _state.get("reason")  # type: ignore[return-value]


__all__ = ["NativeUnavailable", "native", "native_unavailable_reason"]
