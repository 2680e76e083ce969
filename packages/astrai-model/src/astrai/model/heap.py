"""Giving freed heap memory back to the operating system after a load."""

from __future__ import annotations

import ctypes
import ctypes.util


def release_freed_heap() -> None:
    """Return the C heap's free pages to the OS (glibc's `malloc_trim`; a no-op where it is absent).

    Loading packs weights from transient float and block copies of a few MB each; glibc serves
    such sizes from its heap and keeps the pages after they are freed, so without this the
    process would hold them as resident memory for its whole life.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass
