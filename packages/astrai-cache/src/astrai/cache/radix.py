"""A page-granular radix tree over token ids: the prefix cache.

Each edge holds whole pages: a node's `key` is `len(pages) * page_size` tokens, and the children
of a node are keyed by their first page's tokens, so a lookup compares real tokens (a dict hit is
confirmed by tuple equality, never by a hash alone). A partial match that ends inside a node
splits it at the page boundary, so every prefix the cache reports is page-aligned and exact.

The tree holds one reference on each of its pages. Sequences using a cached prefix lock its
last node; a lock counts along the path to the root, and only unlocked leaves are evicted.
Which leaf goes first is an `EvictionPolicy`'s decision (eviction.py): least-recently-used
(`eviction="lru"`) or TinyLFU-style (`"tinylfu"`, the default).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CacheError, CacheInvariantError, LockError, PageLengthError
from .eviction import EvictionPolicy, make_policy
from .pool import PageHandle, PagePool


class RadixNode:
    """An edge of whole pages plus the node it leads to."""

    __slots__ = ("key", "pages", "children", "parent", "lock_ref", "last_access", "freq_key", "stamp")

    def __init__(self, key: list[int], pages: list[PageHandle], parent: RadixNode | None) -> None:
        self.key = key
        self.pages = pages
        self.children: dict[tuple[int, ...], RadixNode] = {}
        self.parent = parent
        self.lock_ref = 0
        # Written only by the eviction policy:
        self.last_access = 0
        self.freq_key = 0  # TinyLFU: hash of the prefix up to this node's first page
        self.stamp = -1  # the queue entry that currently speaks for this node

    def __repr__(self) -> str:
        return f"RadixNode(pages={[h.page for h in self.pages]}, lock_ref={self.lock_ref})"


class RadixCache:
    """Longest-prefix match, insert, lock/unlock and eviction over full KV pages."""

    def __init__(self, pool: PagePool, page_size: int, *, eviction: str | EvictionPolicy = "tinylfu") -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.pool = pool
        self.page_size = page_size
        self.policy = make_policy(eviction, page_size, pool.num_pages)
        self.root = RadixNode([], [], None)
        self._in_tree = bytearray(pool.num_pages)
        self._num_pages = 0
        self._num_nodes = 0
        self._evictable = 0
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

    @property
    def eviction(self) -> str:
        """The eviction policy's name ("tinylfu" | "lru")."""
        return self.policy.name

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
            self._touch(path, counted=path)
        return handles, (path[-1] if path else self.root)

    def peek(self, tokens: Sequence[int]) -> tuple[int, int]:
        """Side-effect-free lookup: (pages of the longest cached prefix, how many of them are unlocked).

        Neither splits a node nor counts as a use (recency, frequency): what `match` would find,
        for deciding whether to open a sequence at all.
        """
        tokens = tokens if isinstance(tokens, list) else list(tokens)
        n = len(tokens) - len(tokens) % self.page_size
        path, partial, k = self._walk(tokens, n)
        matched = unlocked = 0
        for node in path:
            matched += len(node.pages)
            if node.lock_ref == 0:
                unlocked += len(node.pages)
        if partial is not None:
            matched += k
            if partial.lock_ref == 0:
                unlocked += k
        return matched, unlocked

    def _touch(self, path: list[RadixNode], counted: list[RadixNode]) -> None:
        self.policy.on_use(path, counted)
        last = path[-1]
        if last.lock_ref == 0 and not last.children:
            self._offer(last)

    def _split(self, child: RadixNode, k: int) -> RadixNode:
        """Cut `child` after k pages; the new upper node keeps child's place (and locks)."""
        ps = self.page_size
        parent = child.parent
        if parent is None or not 0 < k < len(child.pages):
            raise CacheInvariantError(f"cannot split {child!r} after {k} pages")
        upper = RadixNode(child.key[: k * ps], child.pages[:k], parent)
        upper.lock_ref = child.lock_ref
        parent.children[tuple(child.key[:ps])] = upper
        child.key = child.key[k * ps :]
        child.pages = child.pages[k:]
        child.parent = upper
        self.policy.on_split(upper, child)
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
            leaf = RadixNode(key, new, parent)
            self.policy.on_create(leaf, parent)
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
            self._touch(path, counted=created)
        return cached + new, (path[-1] if path else self.root)

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
                    self._offer(node)
            node = node.parent  # type: ignore[assignment]

    # ---- eviction ------------------------------------------------------------------------

    def _offer(self, node: RadixNode) -> None:
        """Hand an evictable leaf to the policy; start its queue over when stale entries pile up."""
        if self.policy.queued > 2 * self._num_nodes + 64:  # O(1) amortized
            self.policy.rebuild(self._evictable_leaves())  # this leaf included
        else:
            self.policy.offer(node)

    def _evictable_leaf(self, node: RadixNode) -> bool:
        return node.parent is not None and node.lock_ref == 0 and not node.children

    def _evictable_leaves(self) -> list[RadixNode]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self.root and self._evictable_leaf(node):
                out.append(node)
        return out

    def evict(self, num_pages: int) -> list[int]:
        """Drop unlocked leaf pages, least valuable first, until `num_pages` pages are freed.

        Leaves are trimmed from their tail a page at a time, so a partly evicted prefix still
        serves its head. Returns the freed page ids (fewer if not enough are evictable).
        """
        if num_pages <= 0:
            return []
        policy = self.policy
        if policy.needs_rebuild():
            policy.rebuild(self._evictable_leaves())
        ps = self.page_size
        freed: list[int] = []
        while len(freed) < num_pages:
            node = policy.pop(self._evictable_leaf)
            if node is None:
                break
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
                self._offer(node)
                continue
            parent = node.parent
            if parent is None:
                raise CacheInvariantError(f"{node!r} was chosen for eviction but is not in the tree")
            del parent.children[tuple(node.key[:ps])]
            node.parent = None
            policy.forget(node)
            self._num_nodes -= 1
            if parent is not self.root and parent.lock_ref == 0 and not parent.children:
                self._offer(parent)
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
        """Check the tree's structure, page ownership, locks and counters (CacheInvariantError)."""
        ps = self.page_size
        seen: set[int] = set()
        evictable = 0
        nodes = self.nodes()
        for node in nodes:
            if not node.pages:
                raise CacheInvariantError(f"{node!r} holds no page")
            if len(node.key) != len(node.pages) * ps:
                raise CacheInvariantError(f"{node!r}: key length != pages * page_size")
            parent = node.parent
            if parent is None or parent.children.get(tuple(node.key[:ps])) is not node:
                raise CacheInvariantError(f"{node!r} is not reachable under its first page")
            child_locks = sum(c.lock_ref for c in node.children.values())
            if node.lock_ref < child_locks:
                raise CacheInvariantError(f"{node!r}: lock_ref below its children's")
            if node.lock_ref == 0:
                evictable += len(node.pages)
            for h in node.pages:
                if h.page in seen:
                    raise CacheInvariantError(f"page {h.page} is held by two radix nodes")
                seen.add(h.page)
                self.pool.check(h)
        if len(nodes) != self._num_nodes:
            raise CacheInvariantError(f"{len(nodes)} nodes but counter says {self._num_nodes}")
        if len(seen) != self._num_pages:
            raise CacheInvariantError(f"{len(seen)} pages but counter says {self._num_pages}")
        if evictable != self._evictable:
            raise CacheInvariantError(f"{evictable} unlocked pages but counter says {self._evictable}")
        in_tree = {p for p in range(self.pool.num_pages) if self._in_tree[p]}
        if in_tree != seen:
            raise CacheInvariantError("page membership bitmap disagrees with the tree")
