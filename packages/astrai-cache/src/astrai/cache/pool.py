"""A fixed pool of KV pages: O(1) lowest-free-page allocation, reference counts, generations.

Free pages live in a two-level bitmap: 64-bit words of free bits plus a summary integer with
one bit per non-empty word. Finding the lowest free page is two `x & -x` isolations on small
integers, independent of how many pages are in use. Each page carries a reference count (one
per holder: a sequence's page table or the prefix cache) and a generation that is bumped every
time the page is freed, so a handle kept past its page's lifetime is detected instead of
silently aliasing whatever reuses the page.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import CacheError, CacheInvariantError, DoubleFreeError, OutOfPagesError, StaleHandleError

_WORD_BITS = 64
_WORD_FULL = (1 << _WORD_BITS) - 1
_new_tuple = tuple.__new__  # builds a PageHandle in C (a NamedTuple's own __new__ is Python code)


class PageHandle(NamedTuple):
    """A reference to one page during one lifetime of it (page id + generation)."""

    page: int
    generation: int


class PagePool:
    """Owns page ids 0..num_pages-1; knows which are free and how many holders each has."""

    def __init__(self, num_pages: int) -> None:
        if not isinstance(num_pages, int) or num_pages < 1:
            raise ValueError(f"num_pages must be a positive integer, got {num_pages!r}")
        self.num_pages = num_pages
        num_words = (num_pages + _WORD_BITS - 1) // _WORD_BITS
        self._words = [_WORD_FULL] * num_words
        tail = num_pages - (num_words - 1) * _WORD_BITS
        self._words[-1] = (1 << tail) - 1
        self._summary = (1 << num_words) - 1
        self._refcount = [0] * num_pages
        self._generation = [0] * num_pages
        self._num_free = num_pages

    # ---- queries -------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return self._num_free

    @property
    def num_used(self) -> int:
        return self.num_pages - self._num_free

    def refcount(self, page: int) -> int:
        return self._refcount[page]

    def generation(self, page: int) -> int:
        return self._generation[page]

    def is_free(self, page: int) -> bool:
        return self._refcount[page] == 0

    def handle(self, page: int) -> PageHandle:
        """The current handle of a page in use (tests and tools; holders keep their own)."""
        if self._refcount[page] == 0:
            raise StaleHandleError(f"page {page} is free; it has no live handle")
        return PageHandle(page, self._generation[page])

    def check(self, handle: PageHandle) -> None:
        """Raise unless `handle` refers to a page that is still in its handle's lifetime."""
        page, gen = handle
        if not 0 <= page < self.num_pages:
            raise CacheError(f"page {page} is out of range for a pool of {self.num_pages} pages")
        current = self._generation[page]
        if gen == current and self._refcount[page] > 0:
            return
        if self._refcount[page] == 0 and gen < current:
            raise DoubleFreeError(f"page {page} (generation {gen}) was already freed")
        raise StaleHandleError(
            f"stale handle for page {page}: handle generation {gen}, page generation {current}"
            f" (refcount {self._refcount[page]})"
        )

    # ---- allocation ----------------------------------------------------------------------

    def allocate(self) -> PageHandle:
        """Take the lowest free page, with one reference held by the caller."""
        if self._num_free == 0:
            raise OutOfPagesError(f"no free page left (pool of {self.num_pages})")
        summary = self._summary
        w = (summary & -summary).bit_length() - 1
        word = self._words[w]
        bit = word & -word
        word ^= bit
        self._words[w] = word
        if not word:
            self._summary = summary ^ (1 << w)
        page = w * _WORD_BITS + bit.bit_length() - 1
        self._refcount[page] = 1
        self._num_free -= 1
        return _new_tuple(PageHandle, (page, self._generation[page]))

    def allocate_many(self, n: int) -> list[PageHandle]:
        """Take `n` pages, all or none."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of pages ({n})")
        if n > self._num_free:
            raise OutOfPagesError(f"asked for {n} pages but only {self._num_free} are free")
        words, refcount, generation = self._words, self._refcount, self._generation
        summary = self._summary
        out = []
        for _ in range(n):  # allocate() inlined: this runs for every page of every prefill
            w = (summary & -summary).bit_length() - 1
            word = words[w]
            bit = word & -word
            word ^= bit
            words[w] = word
            if not word:
                summary ^= 1 << w
            page = w * _WORD_BITS + bit.bit_length() - 1
            refcount[page] = 1
            out.append(_new_tuple(PageHandle, (page, generation[page])))
        self._summary = summary
        self._num_free -= n
        return out

    def _live(self, handle: PageHandle) -> bool:
        page, gen = handle
        return 0 <= page < self.num_pages and self._generation[page] == gen and self._refcount[page] > 0

    def incref(self, handle: PageHandle) -> None:
        """Add a holder to a live page (sharing it zero-copy)."""
        if not self._live(handle):
            self.check(handle)  # raises the specific error
        self._refcount[handle[0]] += 1

    def decref(self, handle: PageHandle) -> bool:
        """Drop a holder; return True when that freed the page (its generation moves on)."""
        page, gen = handle
        if not (0 <= page < self.num_pages and self._generation[page] == gen and self._refcount[page] > 0):
            self.check(handle)  # raises the specific error
        rc = self._refcount[page] - 1
        self._refcount[page] = rc
        if rc:
            return False
        self._generation[page] += 1
        w, b = divmod(page, _WORD_BITS)
        self._words[w] |= 1 << b
        self._summary |= 1 << w
        self._num_free += 1
        return True

    # ---- checking ------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Check that the bitmap, the summary, the free count and the refcounts agree (CacheInvariantError)."""
        free_bits = 0
        for w, word in enumerate(self._words):
            if bool(word) != bool(self._summary >> w & 1):
                raise CacheInvariantError(f"summary bit {w} disagrees with its word")
            for b in range(_WORD_BITS):
                page = w * _WORD_BITS + b
                bit = word >> b & 1
                if page >= self.num_pages:
                    if bit:
                        raise CacheInvariantError(f"bit for nonexistent page {page} is set")
                    continue
                if bool(bit) != (self._refcount[page] == 0):
                    raise CacheInvariantError(f"page {page}: free bit {bit} but refcount {self._refcount[page]}")
                if self._refcount[page] < 0:
                    raise CacheInvariantError(f"page {page} has negative refcount")
                free_bits += bit
        if free_bits != self._num_free:
            raise CacheInvariantError(f"{free_bits} free bits but num_free={self._num_free}")
