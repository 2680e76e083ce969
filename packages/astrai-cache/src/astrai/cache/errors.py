"""Exceptions for misuse of the KV cache.

Every check runs before any state is touched, so a caught error leaves the cache exactly as it
was: a bug in a caller is reported, never turned into a leaked or doubly-owned page.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error raised by astrai.cache."""


class StaleHandleError(CacheError):
    """A page handle outlived its page: the page was freed (and maybe reused) since."""


class DoubleFreeError(CacheError):
    """A page was released more often than it was referenced."""


class OutOfPagesError(CacheError):
    """More pages were requested than the pool has free."""


class LockError(CacheError):
    """A radix node was unlocked more often than it was locked, or a removed node was used."""


class PageLengthError(CacheError, ValueError):
    """Tokens and pages disagree: a cached page always holds exactly page_size tokens."""


class UnknownSequenceError(CacheError, LookupError):
    """A sequence id that is not open (or is already open) was used."""


class CacheInvariantError(CacheError):
    """`check_invariants()` found the cache's bookkeeping inconsistent (a bug, never user input).

    Raised explicitly rather than by `assert`, so the checks also run under `python -O`.
    """

