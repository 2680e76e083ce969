"""KVCacheManager: the one object the scheduler talks to.

It composes the KV tensors, the page pool, one page table per sequence and the radix prefix
cache, and keeps their ownership rules in one place:

- every holder of a page (a sequence's table, the prefix tree) holds exactly one reference;
- a sequence locks the deepest tree node whose pages it uses, so they are never evicted;
- before a sequence writes into a page someone else holds, it copies it (copy-on-write);
- only pages whose every position has been reserved (and so written by the forward that
  followed the reservation) are ever inserted into the prefix tree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import CacheError, CacheInvariantError, UnknownSequenceError
from .events import CacheEvent, CacheStats
from .page_table import PageTable
from .pool import PagePool
from .radix import RadixCache, RadixNode
from .tensors import KVTensors


@dataclass
class _Sequence:
    table: PageTable
    node: RadixNode | None = None  # the tree node this sequence holds a lock on
    num_tokens: int = 0  # positions [0, num_tokens) are cached or reserved (written by the next forward)
    committed_pages: int = 0
    prompt: list[int] = field(default_factory=list)  # what open() was given: commits must extend it


@dataclass(frozen=True)
class PrefixLookup:
    """The answer of `KVCacheManager.lookup`: what opening a sequence now would find and need."""

    cached_tokens: int  # what open() would report as cached
    pages_needed: int  # new + copy-on-write pages to reserve the requested tokens after open()
    pages_available: int  # free + evictable pages, not counting the matched prefix open() would lock

    @property
    def fits(self) -> bool:
        """Would reserve() succeed right after open()?"""
        return self.pages_needed <= self.pages_available


class KVCacheManager:
    """Paged KV memory with prefix reuse for a set of open sequences."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        page_size: int = 16,
        num_pages: int | None = None,
        memory_budget_bytes: int | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        enable_prefix_cache: bool = True,
        eviction: str = "tinylfu",
    ) -> None:
        self.kv = KVTensors(
            num_layers,
            num_kv_heads,
            head_dim,
            page_size=page_size,
            num_pages=num_pages,
            memory_budget_bytes=memory_budget_bytes,
            dtype=dtype,
            device=device,
        )
        self.page_size = page_size
        self.num_pages = self.kv.num_pages
        self.pool = PagePool(self.num_pages)
        self.radix = RadixCache(self.pool, page_size, eviction=eviction) if enable_prefix_cache else None
        self._seqs: dict[object, _Sequence] = {}
        self._subscribers: list[Callable[[CacheEvent], None]] = []
        self._tokens_queried = 0
        self._tokens_hit = 0
        self._cow_copies = 0
        self._allocated = 0
        self._freed = 0

    # ---- sizes ---------------------------------------------------------------------------

    @property
    def kv_caches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.kv.caches

    @property
    def capacity_tokens(self) -> int:
        return self.kv.capacity_tokens

    @property
    def capacity_bytes(self) -> int:
        return self.kv.capacity_bytes

    def num_free_pages(self) -> int:
        return self.pool.num_free

    def num_evictable_pages(self) -> int:
        return self.radix.evictable_pages if self.radix is not None else 0

    def num_cached_pages(self) -> int:
        return self.radix.num_pages if self.radix is not None else 0

    def has_sequence(self, seq_id: object) -> bool:
        return seq_id in self._seqs

    # ---- sequence lifecycle ----------------------------------------------------------------

    def _get(self, seq_id: object) -> _Sequence:
        seq = self._seqs.get(seq_id)
        if seq is None:
            raise UnknownSequenceError(f"sequence {seq_id!r} is not open")
        return seq

    def open(self, seq_id: object, token_ids: Sequence[int]) -> int:
        """Register a sequence and share its longest cached prefix; return the cached token count.

        At most len(token_ids) - 1 tokens are reported, so the last prompt token is always
        computed (its logits are needed); if it lies in a shared page, reserve() copies it first.
        """
        if seq_id in self._seqs:
            raise UnknownSequenceError(f"sequence {seq_id!r} is already open")
        seq = _Sequence(PageTable(self.pool, self.page_size), prompt=list(token_ids))
        cached = 0
        self._tokens_queried += len(token_ids)
        if self.radix is not None and len(token_ids) > 1:
            handles, node = self.radix.match(token_ids)
            if handles:
                seq.table.attach(handles)
                self.radix.lock(node)
                seq.node = node
                seq.committed_pages = len(handles)
                cached = min(len(handles) * self.page_size, len(token_ids) - 1)
                self._emit("shared", [h.page for h in handles], seq_id)
        seq.num_tokens = cached
        self._tokens_hit += cached
        self._seqs[seq_id] = seq
        return cached

    def lookup(self, token_ids: Sequence[int], total_tokens: int | None = None) -> PrefixLookup:
        """What open(token_ids) then reserve(total_tokens) would find and need, changing nothing.

        No node is split or locked, and neither recency, frequency nor the query counters
        move: a request that waits many steps for memory is looked up many times but counted
        once, when it is opened. `total_tokens` defaults to len(token_ids).
        """
        n = len(token_ids)
        total = n if total_tokens is None else total_tokens
        matched = unlocked = 0
        if self.radix is not None and n > 1:
            matched, unlocked = self.radix.peek(token_ids)
        ps = self.page_size
        cached = min(matched * ps, n - 1) if matched else 0
        needed = 0
        if total > cached:  # as _plan after open(): shared pages from the first written one are copied
            last = (total - 1) // ps
            cow = max(0, min(last + 1, matched) - cached // ps)
            needed = cow + max(0, last + 1 - matched)
        available = self.pool.num_free + self.num_evictable_pages() - unlocked  # open() locks the match
        return PrefixLookup(cached_tokens=cached, pages_needed=needed, pages_available=available)

    def _plan(self, seq: _Sequence, total_tokens: int) -> tuple[list[int], int]:
        """Pages to copy-on-write and new pages needed to write positions [num_tokens, total)."""
        table = seq.table
        ps = self.page_size
        last = (total_tokens - 1) // ps
        refcount = self.pool.refcount
        pages = table.pages
        cow = [i for i in range(seq.num_tokens // ps, min(last + 1, len(pages))) if refcount(pages[i]) > 1]
        return cow, max(0, last + 1 - len(pages))

    def pages_to_reserve(self, seq_id: object, total_tokens: int) -> int:
        """Pages reserve(seq_id, total_tokens) would take now: new ones plus copy-on-write copies."""
        seq = self._get(seq_id)
        if total_tokens <= seq.num_tokens:
            return 0
        cow, new = self._plan(seq, total_tokens)
        return len(cow) + new

    def can_reserve(self, seq_id: object, total_tokens: int) -> bool:
        """Would reserve(seq_id, total_tokens) succeed now (evicting unlocked cache if needed)?"""
        seq = self._get(seq_id)
        if total_tokens <= seq.num_tokens:
            return True
        cow, new = self._plan(seq, total_tokens)
        return len(cow) + new <= self.pool.num_free + self.num_evictable_pages()

    def reserve(self, seq_id: object, total_tokens: int) -> bool:
        """Make positions [0, total_tokens) writable; False (changing nothing) if memory is short."""
        seq = self._get(seq_id)
        start = seq.num_tokens
        if total_tokens <= start:
            return True
        ps = self.page_size
        index = start // ps
        pages = seq.table.pages
        if index == (total_tokens - 1) // ps and index < len(pages) and self.pool.refcount(pages[index]) == 1:
            seq.num_tokens = total_tokens  # decode fast path: more room in a private last page
            return True
        cow, new = self._plan(seq, total_tokens)
        need = len(cow) + new
        if need > self.pool.num_free:
            if need > self.pool.num_free + self.num_evictable_pages():
                return False
            if self.radix is None:
                raise CacheInvariantError("evictable pages reported without a prefix cache")
            evicted = self.radix.evict(need - self.pool.num_free)
            self._emit("evicted", evicted, None)
        table = seq.table
        for i in cow:
            copied = table.copy_on_write(i, self.kv)
            if copied is not None:
                self._cow_copies += 1
                self._allocated += 1
                self._emit("copied", [copied], seq_id)
        added = table.grow(total_tokens)
        if added:
            self._allocated += len(added)
            self._emit("allocated", [h.page for h in added], seq_id)
        seq.num_tokens = total_tokens
        return True

    def truncate(self, seq_id: object, num_tokens: int) -> list[int]:
        """Give back reserved positions [num_tokens, reserved): e.g. speculative tokens that were rejected.

        Whole pages past the new end are freed (returned, and a "freed" event); the K/V left in
        the last kept page past the end is never read and is overwritten by the next writes.
        Pages shared with the prefix cache or other sequences are never touched: cutting into
        them is a CacheError, raised before anything changes.
        """
        seq = self._get(seq_id)
        if not 0 <= num_tokens <= seq.num_tokens:
            raise CacheError(f"sequence {seq_id!r}: cannot truncate {seq.num_tokens} reserved positions to "
                             f"{num_tokens}")
        keep = -(-num_tokens // self.page_size)
        if keep < seq.committed_pages:
            raise CacheError(f"sequence {seq_id!r}: truncating to {num_tokens} tokens would drop pages it "
                             f"shares with the prefix cache (the first {seq.committed_pages})")
        freed = seq.table.truncate(keep) if keep < len(seq.table) else []
        seq.num_tokens = num_tokens
        if freed:
            self._freed += len(freed)
            self._emit("freed", freed, seq_id)
        return freed

    def slot_mapping(self, seq_id: object, start: int, end: int) -> list[int]:
        """KV slots (page * page_size + offset) for positions [start, end)."""
        return self._get(seq_id).table.slots(start, end)

    def block_table(self, seq_id: object) -> list[int]:
        return list(self._get(seq_id).table.pages)

    def commit(self, seq_id: object, token_ids: Sequence[int]) -> None:
        """Insert the sequence's full, written pages into the prefix cache (call after the forward).

        Only positions already reserved count, so a sampled token whose K/V is not written yet
        never enters the cache. Pages the cache already holds for the same tokens replace the
        sequence's own copies, which are freed.
        """
        seq = self._get(seq_id)
        if self.radix is None:
            return
        ps = self.page_size
        n_pages = min(len(token_ids), seq.num_tokens) // ps
        if n_pages <= seq.committed_pages:
            return
        tokens = list(token_ids[: n_pages * ps])
        head = min(len(tokens), len(seq.prompt))
        if tokens[:head] != seq.prompt[:head]:
            raise CacheError(f"commit of sequence {seq_id!r}: token_ids do not start with the prompt given to open()")
        table = seq.table
        mine = table.handles[:n_pages]
        tree, node = self.radix.insert(tokens, mine)
        freed = [old.page for i, old in enumerate(mine) if tree[i] != old and table.replace(i, tree[i])]
        self.radix.lock(node)
        if seq.node is not None:
            self.radix.unlock(seq.node)
        seq.node = node
        seq.committed_pages = n_pages
        if freed:
            self._freed += len(freed)
            self._emit("freed", freed, seq_id)

    def close(self, seq_id: object, token_ids: Sequence[int] | None = None) -> None:
        """Release the sequence; with token_ids (and caching on) its full pages are cached first."""
        seq = self._get(seq_id)
        if token_ids is not None:
            self.commit(seq_id, token_ids)
        if seq.node is not None:
            if self.radix is None:
                raise CacheInvariantError(f"sequence {seq_id!r} holds a tree lock without a prefix cache")
            self.radix.unlock(seq.node)
            seq.node = None
        freed = seq.table.release()
        del self._seqs[seq_id]
        if freed:
            self._freed += len(freed)
            self._emit("freed", freed, seq_id)

    def clear_prefix_cache(self) -> int:
        """Evict every unlocked cached page; return how many were freed."""
        if self.radix is None:
            return 0
        freed = self.radix.clear()
        self._emit("evicted", freed, None)
        return len(freed)

    # ---- observing -----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[CacheEvent], None]) -> Callable[[], None]:
        """Call `callback(CacheEvent)` on every page event; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, kind: str, pages: list, seq_id: object) -> None:
        if kind == "evicted":
            self._freed += len(pages)
        if pages and self._subscribers:
            event = CacheEvent(kind, pages, seq_id)  # type: ignore[arg-type]
            for callback in list(self._subscribers):
                callback(event)

    def stats(self) -> CacheStats:
        free = self.pool.num_free
        evictable = self.num_evictable_pages()
        return CacheStats(
            num_pages=self.num_pages,
            page_size=self.page_size,
            free_pages=free,
            cached_pages=self.num_cached_pages(),
            evictable_pages=evictable,
            in_use_pages=self.num_pages - free - evictable,
            num_sequences=len(self._seqs),
            tokens_queried=self._tokens_queried,
            tokens_hit=self._tokens_hit,
            evicted_pages=self.radix.evicted_pages if self.radix is not None else 0,
            cow_copies=self._cow_copies,
            allocated_pages=self._allocated,
            freed_pages=self._freed,
        )

    def check_invariants(self) -> None:
        """Check that every page is accounted for exactly once; CacheInvariantError says what broke.

        Explicit raises, not `assert`: the checks run under `python -O` too.
        """
        pool = self.pool
        pool.check_invariants()
        holders: Counter[int] = Counter()
        in_use: set[int] = set()
        for seq_id, seq in self._seqs.items():
            pages = seq.table.pages
            if len(set(pages)) != len(pages):
                raise CacheInvariantError(f"sequence {seq_id!r} holds a page twice")
            if pages != [h.page for h in seq.table.handles]:
                raise CacheInvariantError(f"sequence {seq_id!r}: page list out of sync")
            for h in seq.table.handles:
                pool.check(h)
            holders.update(pages)
            in_use.update(pages)
            if seq.num_tokens > len(pages) * self.page_size:
                raise CacheInvariantError(f"sequence {seq_id!r} reserved beyond its pages")
        unlocked: set[int] = set()
        if self.radix is not None:
            self.radix.check_invariants()
            expected_locks: Counter[int] = Counter()
            for seq in self._seqs.values():
                node = seq.node
                while node is not None and node is not self.radix.root:
                    expected_locks[id(node)] += 1
                    node = node.parent
            for node in self.radix.nodes():
                if node.lock_ref != expected_locks[id(node)]:
                    raise CacheInvariantError(
                        f"{node!r}: lock_ref {node.lock_ref} but {expected_locks[id(node)]} sequences lock it"
                    )
                pages = [h.page for h in node.pages]
                holders.update(pages)
                (in_use if node.lock_ref else unlocked).update(pages)
        for page in range(self.num_pages):
            if pool.refcount(page) != holders[page]:
                raise CacheInvariantError(f"page {page}: refcount {pool.refcount(page)} but {holders[page]} holders")
        if unlocked & in_use:
            raise CacheInvariantError(f"pages {sorted(unlocked & in_use)[:8]} are evictable yet in use")
        total = pool.num_free + len(unlocked) + len(in_use)
        if total != self.num_pages:
            raise CacheInvariantError(
                f"free {pool.num_free} + cached {len(unlocked)} + in use {len(in_use)} = {total} != {self.num_pages}"
            )
