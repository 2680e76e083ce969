"""One sequence's pages, in position order: grows on demand, shares zero-copy, copies on write.

Token position `p` of the sequence lives in page `pages[p // page_size]` at offset
`p % page_size`; its slot in the KV tensors is `page * page_size + offset`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CacheError, OutOfPagesError
from .pool import PageHandle, PagePool
from .tensors import KVTensors


class PageTable:
    """The pages one sequence holds a reference to (each page at most once)."""

    def __init__(self, pool: PagePool, page_size: int) -> None:
        self.pool = pool
        self.page_size = page_size
        self.handles: list[PageHandle] = []
        self.pages: list[int] = []  # handles' page ids, kept alongside for cheap block tables

    def __len__(self) -> int:
        return len(self.handles)

    @property
    def capacity_tokens(self) -> int:
        return len(self.handles) * self.page_size

    def pages_needed(self, num_tokens: int) -> int:
        """New pages needed so that `num_tokens` positions fit."""
        return max(0, -(-num_tokens // self.page_size) - len(self.handles))

    def attach(self, handles: Sequence[PageHandle]) -> None:
        """Append pages someone else holds, sharing them zero-copy (one more reference each)."""
        for h in handles:
            self.pool.check(h)
        if len({h.page for h in handles} | set(self.pages)) != len(handles) + len(self.pages):
            raise CacheError("a page table cannot hold the same page twice")
        for h in handles:
            self.pool.incref(h)
        self.handles.extend(handles)
        self.pages.extend(h.page for h in handles)

    def grow(self, num_tokens: int) -> list[PageHandle]:
        """Allocate pages until `num_tokens` positions fit; a page is added only when needed."""
        n = self.pages_needed(num_tokens)
        if n > self.pool.num_free:
            raise OutOfPagesError(f"{n} new pages needed, {self.pool.num_free} free")
        new = self.pool.allocate_many(n)
        self.handles.extend(new)
        self.pages.extend(h.page for h in new)
        return new

    def copy_on_write(self, index: int, kv: KVTensors | None) -> tuple[int, int] | None:
        """Make page `index` private before writing into it; return (old, new) if copied."""
        old = self.handles[index]
        if self.pool.refcount(old.page) <= 1:
            return None
        new = self.pool.allocate()
        if kv is not None:
            kv.copy_page(old.page, new.page)
        self.pool.decref(old)  # others still hold it: never frees here
        self.handles[index] = new
        self.pages[index] = new.page
        return old.page, new.page

    def replace(self, index: int, handle: PageHandle) -> bool:
        """Point entry `index` at another live page with the same contents; True if the old was freed."""
        if handle.page in self.pages:
            if self.pages[index] == handle.page:
                return False
            raise CacheError(f"page {handle.page} is already in this table")
        self.pool.incref(handle)
        old = self.handles[index]
        self.handles[index] = handle
        self.pages[index] = handle.page
        return self.pool.decref(old)

    def truncate(self, num_pages: int) -> list[int]:
        """Keep the first `num_pages` pages, dropping the rest; return the pages that became free.

        Only private pages (this table their one holder) may be dropped: checked before anything
        changes, so a refused call leaves the table as it was.
        """
        if not 0 <= num_pages <= len(self.handles):
            raise CacheError(f"cannot truncate {len(self.handles)} pages to {num_pages}")
        shared = [h.page for h in self.handles[num_pages:] if self.pool.refcount(h.page) != 1]
        if shared:
            raise CacheError(f"pages {shared[:8]} are shared; truncation only gives back private pages")
        decref = self.pool.decref
        freed = [h.page for h in self.handles[num_pages:] if decref(h)]
        del self.handles[num_pages:]
        del self.pages[num_pages:]
        return freed

    def release(self) -> list[int]:
        """Drop every reference; return the pages that became free."""
        decref = self.pool.decref
        freed = [h.page for h in self.handles if decref(h)]
        self.handles.clear()
        self.pages.clear()
        return freed

    def slots(self, start: int, end: int) -> list[int]:
        """KV slots of positions [start, end), built per page from ranges (no per-token math)."""
        if not 0 <= start <= end <= len(self.pages) * self.page_size:
            raise CacheError(
                f"positions [{start}, {end}) are outside the {len(self.pages) * self.page_size} reserved"
            )
        ps = self.page_size
        pages = self.pages
        if end - start == 1:
            return [pages[start // ps] * ps + start % ps]
        out: list[int] = []
        pos = start
        while pos < end:
            index, offset = divmod(pos, ps)
            stop = min(end - pos, ps - offset)
            base = pages[index] * ps + offset
            out.extend(range(base, base + stop))
            pos += stop
        return out
