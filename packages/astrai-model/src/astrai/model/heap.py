"""Giving freed heap memory back to the operating system after a load."""

from __future__ import annotations

import ctypes


def release_freed_heap() -> None:
    """Return the C heap's free pages to the OS (glibc's `malloc_trim`; a no-op where it is absent).

    Loading packs weights from transient float and block copies of a few MB each; glibc serves
    such sizes from its heap and keeps the pages after they are freed, so without this the
    process would hold them as resident memory for its whole life.
    """
    try:
        # the process's own symbols (libc among them): no library search, which would spawn ldconfig
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS) or no dlopen (Windows)
        pass
