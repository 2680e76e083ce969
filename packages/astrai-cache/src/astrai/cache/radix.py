"""A page-granular radix tree over token ids: the prefix cache.

Each edge holds whole pages: a node's `key` is `len(pages) * page_size` tokens, and the children
of a node are keyed by their first page's tokens, so a lookup compares real tokens (a dict hit is
confirmed by tuple equality, never by a hash alone). A partial match that ends inside a node
splits it at the page boundary, so every prefix the cache reports is page-aligned and exact.

The tree holds one reference on each of its pages. Sequences using a cached prefix lock its
last node; a lock counts along the path to the root, and only unlocked leaves are evicted.
Eviction order is least-recently-used (`eviction="lru"`) or TinyLFU-style (`"tinylfu"`):
lowest estimated use frequency first, least-recently-used among equals, so a burst of one-off
prompts cannot flush a system prompt that many requests share.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from .errors import CacheError, LockError, PageLengthError
from .pool import PageHandle, PagePool
from .sketch import CountMinSketch

EVICTION_POLICIES = ("tinylfu", "lru")


def _chain(prev: int, page_tokens: Sequence[int]) -> int:
    """Hash of a prefix up to and including one more page (a sketch key, never a match key)."""
    return hash((prev, tuple(page_tokens)))


class RadixNode:
    """An edge of whole pages plus the node it leads to."""

    __slots__ = ("key", "pages", "children", "parent", "lock_ref", "last_access", "first_hash", "stamp")

    def __init__(self, key: list[int], pages: list[PageHandle], parent: RadixNode | None, first_hash: int) -> None:
        self.key = key
        self.pages = pages
        self.children: dict[tuple[int, ...], RadixNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = 0
        self.first_hash = first_hash  # frequency key: the prefix up to this node's first page
        self.stamp = -1  # the heap entry that currently speaks for this node

    def __repr__(self) -> str:
        return f"RadixNode(pages={[h.page for h in self.pages]}, lock_ref={self.lock_ref})"


class RadixCache:
    """Longest-prefix match, insert, lock/unlock and eviction over full KV pages."""

    def __init__(self, pool: PagePool, page_size: int, *, eviction: str = "tinylfu") -> None:
        if eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction must be one of {EVICTION_POLICIES}, got {eviction!r}")
        if page_size < 1:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.pool = pool
        self.page_size = page_size
        self.eviction = eviction
        self.sketch = CountMinSketch(pool.num_pages) if eviction == "tinylfu" else None
        self.root = RadixNode([], [], None, 0)
        self._in_tree = bytearray(pool.num_pages)
        self._clock = 0
        self._num_pages = 0
        self._num_nodes = 0
        self._evictable = 0
        self._heap: list[tuple[int, int, int, RadixNode]] = []
        self._next_stamp = 0
        self._sketch_resets = 0
        self.evicted_pages = 0

    # ---- queries -------------------------------------------------------------------------

    @property
    def num_pages(self) -> int:
        """Pages held by the tree, locked or not."""
        return self._num_pages

    @property
    def evictable_pages(self) -> int:
        """Pages in unlocked nodes: what evict() could drop."""
        return self._evictable

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    def contains_page(self, page: int) -> bool:
        return bool(self._in_tree[page])

    # ---- matching ------------------------------------------------------------------------

    def _walk(self, tokens: list[int], n: int) -> tuple[list[RadixNode], RadixNode | None, int]:
        """Follow full-node matches; return the path, a partially matched child and its page count."""
        ps = self.page_size
        node, pos, path = self.root, 0, []
        while pos < n:
            child = node.children.get(tuple(tokens[pos : pos + ps]))
            if child is None:
                break
            end = pos + len(child.key)
            if end <= n and tokens[pos:end] == child.key:
                path.append(child)
                node, pos = child, end
                continue
            k = 1  # the first page matched: it is the dict key
            key = child.key
            while (k + 1) * ps <= len(key) and pos + (k + 1) * ps <= n:
                if tokens[pos + k * ps : pos + (k + 1) * ps] != key[k * ps : (k + 1) * ps]:
                    break
                k += 1
            return path, child, k
        return path, None, 0

    def match(self, tokens: Sequence[int], *, touch: bool = True) -> tuple[list[PageHandle], RadixNode]:
        """Longest cached page-aligned prefix of `tokens`: its page handles and its last node.

        The handles are the tree's; take your own reference (PageTable.attach) and lock the
        node while you use them. With `touch`, the hit counts for recency and frequency.
        """
        tokens = tokens if isinstance(tokens, list) else list(tokens)
        n = len(tokens) - len(tokens) % self.page_size
        path, partial, k = self._walk(tokens, n)
        if partial is not None:
            path.append(self._split(partial, k))
        handles = [h for node in path for h in node.pages]
        if touch and path:
            self._touch(path, count=path)
        return handles, (path[-1] if path else self.root)

    def _touch(self, path: list[RadixNode], count: list[RadixNode]) -> None:
        self._clock += 1
        for node in path:
            node.last_access = self._clock
        if self.sketch is not None:
            for node in count:
                self.sketch.increment(node.first_hash)
        last = path[-1]
        if last.lock_ref == 0 and not last.children:
            self._push(last)

    def _split(self, child: RadixNode, k: int) -> RadixNode:
        """Cut `child` after k pages; the new upper node keeps child's place (and locks)."""
        ps = self.page_size
        parent = child.parent
        assert parent is not None and 0 < k < len(child.pages)
        upper = RadixNode(child.key[: k * ps], child.pages[:k], parent, child.first_hash)
        upper.lock_ref = child.lock_ref
        upper.last_access = child.last_access
        parent.children[tuple(child.key[:ps])] = upper
        last_hash = child.first_hash
        for i in range(1, k):
            last_hash = _chain(last_hash, child.key[i * ps : (i + 1) * ps])
        child.key = child.key[k * ps :]
        child.pages = child.pages[k:]
        child.parent = upper
        child.first_hash = _chain(last_hash, child.key[:ps])
        if self.sketch is not None:  # every use of the old node went through its lower part too
            self.sketch.add(child.first_hash, self.sketch.estimate(upper.first_hash))
        upper.children[tuple(child.key[:ps])] = child
        self._num_nodes += 1
        return upper

    # ---- inserting -----------------------------------------------------------------------

    def insert(self, tokens: Sequence[int], handles: Sequence[PageHandle]) -> tuple[list[PageHandle], RadixNode]:
        """Cache `handles` (full pages holding `tokens`); return the tree's handles and last node.

        Pages the tree already holds for the same tokens are not taken: the returned handles
        name the tree's copies, so the caller can switch to them and free its duplicates. The
        tree takes its own reference on each page it newly stores.
        """
        ps = self.page_size
        tokens = tokens if isinstance(tokens, list) else list(tokens)
        if len(tokens) != len(handles) * ps:
            raise PageLengthError(
                f"{len(tokens)} tokens do not fill {len(handles)} pages of {ps} tokens exactly"
            )
        for h in handles:
            self.pool.check(h)
        path, partial, k = self._walk(tokens, len(tokens))
        cached = [h for node in path for h in node.pages]
        if partial is not None:
            cached.extend(partial.pages[:k])
        new = list(handles[len(cached) :])
        new_pages = {h.page for h in new}
        if len(new_pages) != len(new) or any(self._in_tree[p] for p in new_pages):
            raise CacheError("insert would store a page twice (already cached or repeated in the input)")

        if partial is not None:
            path.append(self._split(partial, k))
        parent = path[-1] if path else self.root
        created: list[RadixNode] = []
        if new:
            start = len(cached) * ps
            key = tokens[start:]
            prev = self._last_hash(parent)
            leaf = RadixNode(key, new, parent, _chain(prev, key[:ps]))
            for h in new:
                self.pool.incref(h)
                self._in_tree[h.page] = 1
            parent.children[tuple(key[:ps])] = leaf
            self._num_pages += len(new)
            self._num_nodes += 1
            self._evictable += len(new)
            path.append(leaf)
            created.append(leaf)
        if path:
            self._touch(path, count=created)
        return cached + new, (path[-1] if path else self.root)

    def _last_hash(self, node: RadixNode) -> int:
        if node is self.root:
            return 0
        ps = self.page_size
        h = node.first_hash
        for i in range(1, len(node.pages)):
            h = _chain(h, node.key[i * ps : (i + 1) * ps])
        return h

    # ---- locking -------------------------------------------------------------------------

    def lock(self, node: RadixNode) -> None:
        """Protect `node` and its ancestors from eviction (counted: lock twice, unlock twice)."""
        if node is self.root:
            return
        if node.parent is None:
            raise LockError("cannot lock a node that was evicted from the cache")
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.pages)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: RadixNode) -> None:
        """Undo one lock(node); raises LockError (changing nothing) if it is not locked."""
        if node is self.root:
            return
        if node.lock_ref <= 0:
            raise LockError(f"unlock of {node!r} below zero")
        while node is not self.root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable += len(node.pages)
                if not node.children:
                    self._push(node)
            node = node.parent  # type: ignore[assignment]

    # ---- eviction ------------------------------------------------------------------------

    def _priority(self, node: RadixNode) -> tuple[int, int]:
        freq = self.sketch.estimate(node.first_hash) if self.sketch is not None else 0
        return freq, node.last_access

    def _push(self, node: RadixNode) -> None:
        """(Re)queue an evictable leaf at its current priority; older entries for it go stale."""
        if len(self._heap) > 2 * self._num_nodes + 64:  # stale entries: start over, O(1) amortized
            self._rebuild_heap()  # pushes every evictable leaf, this one included
            return
        self._next_stamp += 1
        node.stamp = self._next_stamp
        freq, last = self._priority(node)
        heapq.heappush(self._heap, (freq, last, node.stamp, node))

    def _evictable_leaf(self, node: RadixNode) -> bool:
        return node.parent is not None and node.lock_ref == 0 and not node.children

    def _rebuild_heap(self) -> None:
        """Re-key every evictable leaf (after the sketch halved, or when stale entries pile up)."""
        self._heap = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self.root and self._evictable_leaf(node):
                self._push(node)
        if self.sketch is not None:
            self._sketch_resets = self.sketch.resets

    def evict(self, num_pages: int) -> list[int]:
        """Drop unlocked leaf pages, least valuable first, until `num_pages` pages are freed.

        Leaves are trimmed from their tail a page at a time, so a partly evicted prefix still
        serves its head. Returns the freed page ids (fewer if not enough are evictable).
        """
        if num_pages <= 0:
            return []
        if self.sketch is not None and self.sketch.resets != self._sketch_resets:
            self._rebuild_heap()
        ps = self.page_size
        freed: list[int] = []
        while len(freed) < num_pages and self._heap:
            freq, last, stamp, node = heapq.heappop(self._heap)
            if node.stamp != stamp or not self._evictable_leaf(node):
                continue
            if (freq, last) != self._priority(node):
                self._push(node)
                continue
            take = min(len(node.pages), num_pages - len(freed))
            dropped = node.pages[len(node.pages) - take :]
            for h in reversed(dropped):  # tail first
                self._in_tree[h.page] = 0
                if self.pool.decref(h):
                    freed.append(h.page)
            self._num_pages -= take
            self._evictable -= take
            self.evicted_pages += take
            if take < len(node.pages):
                node.pages = node.pages[: len(node.pages) - take]
                node.key = node.key[: len(node.pages) * ps]
                self._push(node)
                continue
            parent = node.parent
            assert parent is not None
            del parent.children[tuple(node.key[:ps])]
            node.parent = None
            node.stamp = -1
            self._num_nodes -= 1
            if parent is not self.root and parent.lock_ref == 0 and not parent.children:
                self._push(parent)
        return freed

    def clear(self) -> list[int]:
        """Evict everything that is not locked."""
        return self.evict(self._evictable)

    # ---- checking ------------------------------------------------------------------------

    def nodes(self) -> list[RadixNode]:
        """Every node but the root (tests and tools)."""
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    def check_invariants(self) -> None:
        """Assert the tree's structure, page ownership, locks and counters agree."""
        ps = self.page_size
        seen: set[int] = set()
        evictable = 0
        nodes = self.nodes()
        for node in nodes:
            assert node.pages, f"{node!r} holds no page"
            assert len(node.key) == len(node.pages) * ps, f"{node!r}: key length != pages * page_size"
            parent = node.parent
            assert parent is not None and parent.children.get(tuple(node.key[:ps])) is node, (
                f"{node!r} is not reachable under its first page"
            )
            child_locks = sum(c.lock_ref for c in node.children.values())
            assert node.lock_ref >= child_locks, f"{node!r}: lock_ref below its children's"
            if node.lock_ref == 0:
                evictable += len(node.pages)
            for h in node.pages:
                assert h.page not in seen, f"page {h.page} is held by two radix nodes"
                seen.add(h.page)
                self.pool.check(h)
        assert len(nodes) == self._num_nodes, f"{len(nodes)} nodes but counter says {self._num_nodes}"
        assert len(seen) == self._num_pages, f"{len(seen)} pages but counter says {self._num_pages}"
        assert evictable == self._evictable, f"{evictable} unlocked pages but counter says {self._evictable}"
        in_tree = {p for p in range(self.pool.num_pages) if self._in_tree[p]}
        assert in_tree == seen, "page membership bitmap disagrees with the tree"
