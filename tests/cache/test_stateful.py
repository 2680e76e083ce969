"""Stateful property tests: random interleavings checked against plain reference models.

`PagesMachine` drives the parts (pool, page tables, KV tensors, radix tree) directly, the way a
scheduler might misuse them; `ManagerMachine` drives KVCacheManager the way the scheduler uses
it, with a fake forward that writes K/V as a pure function of the token prefix, so any cache
hit, copy-on-write or dedup that serves wrong data is caught. After every step: every page is
free, cached-unlocked or in use (exactly one of them), refcounts equal the number of holders,
and no page has two owners. At the end, releasing everything leaves nothing in use.
"""

from collections import Counter

import torch
from astrai.cache import (
    CacheError,
    DoubleFreeError,
    KVCacheManager,
    KVTensors,
    LockError,
    OutOfPagesError,
    PageLengthError,
    PagePool,
    PageTable,
    RadixCache,
    StaleHandleError,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

PS = 2
NUM_PAGES = 16
SETTINGS = settings(
    max_examples=120, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)
# A tiny alphabet so that prefixes collide, split and share all the time.
token_lists = st.lists(st.integers(0, 1), min_size=0, max_size=4 * PS)


def tree_contents(radix: RadixCache) -> tuple[dict[tuple, int], dict[tuple, int]]:
    """prefix (all tokens up to the end of a page) -> page, and -> the lock count of its node."""
    ps = radix.page_size
    pages, locks = {}, {}
    stack = [(child, ()) for child in radix.root.children.values()]
    while stack:
        node, prefix = stack.pop()
        for i, h in enumerate(node.pages):
            key = prefix + tuple(node.key[: (i + 1) * ps])
            pages[key] = h.page
            locks[key] = node.lock_ref
        end = prefix + tuple(node.key)
        stack.extend((child, end) for child in node.children.values())
    return pages, locks


class PagesMachine(RuleBasedStateMachine):
    eviction = "lru"

    def __init__(self):
        super().__init__()
        self.pool = PagePool(NUM_PAGES)
        self.kv = KVTensors(1, 1, 1, page_size=PS, num_pages=NUM_PAGES, dtype=torch.float32)
        self.radix = RadixCache(self.pool, PS, eviction=self.eviction)
        # reference model
        self.tables: dict[int, PageTable] = {}
        self.tokens: dict[int, list[int]] = {}
        self.content: dict[int, list[float]] = {}  # what each table must read in each of its pages
        self.tree: dict[tuple, int] = {}  # cached prefix -> page
        self.tree_content: dict[tuple, float] = {}
        self.locks: list[tuple[object, int, tuple]] = []  # (node, matched pages, matched tokens)
        self.dead_handles = []
        self.next_id = 0
        self.next_value = 1.0

    # ---- helpers -------------------------------------------------------------------------

    def fresh_value(self) -> float:
        self.next_value += 1.0
        return self.next_value

    def fill(self, page: int) -> float:
        value = self.fresh_value()
        self.kv.buffer[:, :, page] = value
        return value

    def state(self):
        pool = self.pool
        return (
            pool.num_free,
            [pool.refcount(p) for p in range(NUM_PAGES)],
            [pool.generation(p) for p in range(NUM_PAGES)],
            tree_contents(self.radix),
            {i: list(t.pages) for i, t in self.tables.items()},
        )

    def expected_match(self, tokens: list[int]) -> list[int]:
        pages = []
        for i in range(len(tokens) // PS):
            page = self.tree.get(tuple(tokens[: (i + 1) * PS]))
            if page is None:
                break
            pages.append(page)
        return pages

    def draw_query(self, data) -> list[int]:
        """Mostly a cut (maybe with one token changed) of a sequence we know, else random tokens."""
        known = [t for t in self.tokens.values() if t]
        if not known or data.draw(st.integers(0, 3)) == 0:
            return data.draw(token_lists)
        query = list(data.draw(st.sampled_from(known)))
        query = query[: data.draw(st.integers(0, len(query) + 1))] + data.draw(token_lists)[:1]
        if query and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(query) - 1))
            query[i] ^= 1
        return query

    def add_table(self, table: PageTable, tokens: list[int], content: list[float]) -> None:
        self.tables[self.next_id] = table
        self.tokens[self.next_id] = tokens
        self.content[self.next_id] = content
        self.next_id += 1

    # ---- rules ---------------------------------------------------------------------------

    @initialize(tokens=st.lists(st.integers(0, 1), min_size=2 * PS, max_size=4 * PS))
    def start_with_a_cached_table(self, tokens):
        self.allocate(tokens)
        self.insert_table(0)

    @rule(tokens=token_lists)
    def allocate(self, tokens):
        n = len(tokens) // PS
        tokens = tokens[: n * PS]
        table = PageTable(self.pool, PS)
        if n > self.pool.num_free:
            before = self.state()
            try:
                table.grow(n * PS)
                raise AssertionError("grow beyond the free pages must raise")
            except OutOfPagesError:
                pass
            assert self.state() == before
            return
        table.grow(n * PS)
        self.add_table(table, tokens, [self.fill(p) for p in table.pages])

    @precondition(lambda self: self.tables)
    @rule(data=st.data(), extra=token_lists)
    def extend(self, data, extra):
        tid = data.draw(st.sampled_from(sorted(self.tables)))
        table = self.tables[tid]
        n = len(extra) // PS
        if n == 0 or n > self.pool.num_free:
            return
        new = table.grow(len(table) * PS + n * PS)
        assert len(new) == n
        self.tokens[tid] += extra[: n * PS]
        self.content[tid] += [self.fill(h.page) for h in new]

    @precondition(lambda self: self.tables)
    @rule(data=st.data())
    def share(self, data):
        tid = data.draw(st.sampled_from(sorted(self.tables)))
        shared = PageTable(self.pool, PS)
        shared.attach(self.tables[tid].handles)
        self.add_table(shared, list(self.tokens[tid]), list(self.content[tid]))

    @precondition(lambda self: any(self.tables.values()))
    @rule(data=st.data())
    def write_with_copy_on_write(self, data):
        tid = data.draw(st.sampled_from(sorted(t for t, tab in self.tables.items() if len(tab))))
        table = self.tables[tid]
        index = data.draw(st.integers(0, len(table) - 1))
        shared = self.pool.refcount(table.pages[index]) > 1
        if shared and self.pool.num_free == 0:
            return
        old = table.pages[index]
        copied = table.copy_on_write(index, self.kv)
        assert (copied is not None) == shared
        if copied is not None:
            assert copied == (old, table.pages[index]) and self.pool.refcount(table.pages[index]) == 1
        value = self.fresh_value()
        self.kv.buffer[:, :, table.pages[index]] = value  # the write only this table may see
        self.content[tid][index] = value

    @precondition(lambda self: self.tables)
    @rule(data=st.data())
    def insert(self, data):
        self.insert_table(data.draw(st.sampled_from(sorted(self.tables))))

    def insert_table(self, tid):
        table, tokens = self.tables[tid], self.tokens[tid]
        tree_handles, node = self.radix.insert(tokens, table.handles)
        for i, h in enumerate(tree_handles):
            key = tuple(tokens[: (i + 1) * PS])
            if key in self.tree:
                assert h.page == self.tree[key], "insert must return the tree's page for a cached prefix"
            else:
                assert h.page == table.pages[i]
                self.tree[key] = h.page
                self.tree_content[key] = self.content[tid][i]

    @rule(data=st.data(), lock=st.booleans())
    def match(self, data, lock):
        query = self.draw_query(data)
        handles, node = self.radix.match(query)
        pages = [h.page for h in handles]
        assert pages == self.expected_match(query)
        if lock and pages:
            self.radix.lock(node)
            self.locks.append((node, len(pages), tuple(query[: len(pages) * PS])))

    @rule(data=st.data())
    def attach_match(self, data):
        query = self.draw_query(data)
        handles, _ = self.radix.match(query)
        table = PageTable(self.pool, PS)
        table.attach(handles)
        matched = query[: len(handles) * PS]
        content = [self.tree_content[tuple(matched[: (i + 1) * PS])] for i in range(len(handles))]
        self.add_table(table, matched, content)

    @precondition(lambda self: self.locks)
    @rule(data=st.data())
    def unlock(self, data):
        i = data.draw(st.integers(0, len(self.locks) - 1))
        node, _, _ = self.locks.pop(i)
        self.radix.unlock(node)

    @rule(n=st.integers(0, 4))
    def evict(self, n):
        before_tree = dict(self.tree)
        _, locks = tree_contents(self.radix)
        freed = self.radix.evict(n)
        after, _ = tree_contents(self.radix)
        assert after.items() <= before_tree.items(), "eviction may only remove cached prefixes"
        removed = {k: p for k, p in before_tree.items() if k not in after}
        assert all(locks[k] == 0 for k in removed), "a locked prefix was evicted"
        held = {p for t in self.tables.values() for p in t.pages}
        assert sorted(freed) == sorted(p for p in removed.values() if p not in held)
        assert len(freed) <= n
        if len(freed) < n:
            assert all(locks[k] for k in after), "stopped early while unlocked pages remained"
        self.tree = after
        self.tree_content = {k: v for k, v in self.tree_content.items() if k in after}

    @precondition(lambda self: self.tables)
    @rule(data=st.data())
    def free(self, data):
        tid = data.draw(st.sampled_from(sorted(self.tables)))
        table = self.tables.pop(tid)
        del self.tokens[tid], self.content[tid]
        handles = list(table.handles)
        others = Counter(p for t in self.tables.values() for p in t.pages) + Counter(self.tree.values())
        freed = table.release()
        assert sorted(freed) == sorted(h.page for h in handles if not others[h.page])
        self.dead_handles += [h for h in handles if h.page in freed]

    # ---- misuse: each raises a specific error and changes nothing ------------------------

    @precondition(lambda self: self.dead_handles)
    @rule(data=st.data(), action=st.sampled_from(["decref", "incref", "attach"]))
    def use_stale_handle(self, data, action):
        h = data.draw(st.sampled_from(self.dead_handles))
        before = self.state()
        expected = DoubleFreeError if self.pool.refcount(h.page) == 0 and action == "decref" else StaleHandleError
        if self.pool.refcount(h.page) == 0 and action != "decref":
            expected = (StaleHandleError, DoubleFreeError)
        try:
            if action == "attach":
                PageTable(self.pool, PS).attach([h])
            else:
                getattr(self.pool, action)(h)
            raise AssertionError("a stale handle was accepted")
        except expected:
            pass
        assert self.state() == before

    @precondition(lambda self: any(self.tables.values()))
    @rule(data=st.data(), delta=st.sampled_from([-1, 1]))
    def insert_wrong_length(self, data, delta):
        tid = data.draw(st.sampled_from(sorted(t for t, tab in self.tables.items() if len(tab))))
        tokens = self.tokens[tid] + [0] if delta > 0 else self.tokens[tid][:-1]
        before = self.state()
        try:
            self.radix.insert(tokens, self.tables[tid].handles)
            raise AssertionError("wrong-length insert was accepted")
        except PageLengthError:
            pass
        assert self.state() == before

    @rule()
    def unlock_below_zero(self):
        unlocked = [n for n in self.radix.nodes() if n.lock_ref == 0]
        if not unlocked:
            return
        before = self.state()
        try:
            self.radix.unlock(unlocked[0])
            raise AssertionError("unlock below zero was accepted")
        except LockError:
            pass
        assert self.state() == before

    @rule()
    def allocate_more_than_free(self):
        before = self.state()
        try:
            self.pool.allocate_many(self.pool.num_free + 1)
            raise AssertionError("over-allocation was accepted")
        except OutOfPagesError:
            pass
        assert self.state() == before

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def accounting(self):
        self.pool.check_invariants()
        self.radix.check_invariants()
        actual, locks = tree_contents(self.radix)
        assert actual == self.tree
        assert len(set(self.tree.values())) == len(self.tree), "a page is cached under two prefixes"
        holders = Counter(self.tree.values())
        for table in self.tables.values():
            assert len(set(table.pages)) == len(table.pages), "a table holds a page twice"
            holders.update(table.pages)
        for page in range(NUM_PAGES):
            assert self.pool.refcount(page) == holders[page], f"page {page}: refcount != holders"
        # expected lock counts from the held locks alone
        for key in self.tree:
            expected = sum(1 for _, n, toks in self.locks if len(key) <= n * PS and toks[: len(key)] == key)
            assert locks[key] == expected, f"prefix {key}: lock {locks[key]} != {expected}"
        held = {p for t in self.tables.values() for p in t.pages}
        locked = {p for k, p in self.tree.items() if locks[k]}
        cached_unlocked = {p for k, p in self.tree.items() if not locks[k]} - held
        in_use = held | locked
        free = {p for p in range(NUM_PAGES) if not holders[p]}
        assert len(free) == self.pool.num_free
        assert len(free) + len(cached_unlocked) + len(in_use) == NUM_PAGES
        assert self.radix.evictable_pages == sum(1 for k in self.tree if not locks[k])
        # what every holder reads is what it last wrote (copy-on-write kept writes private)
        values = self.kv.buffer[0, 0, :, 0, 0, 0].tolist()
        for tid, table in self.tables.items():
            assert [values[p] for p in table.pages] == self.content[tid]
        for key, page in self.tree.items():
            assert values[page] == self.tree_content[key]

    def teardown(self):
        for node, _, _ in self.locks:
            self.radix.unlock(node)
        for table in self.tables.values():
            table.release()
        self.radix.clear()
        assert self.radix.num_pages == 0 and self.pool.num_free == NUM_PAGES
        self.pool.check_invariants()
        self.radix.check_invariants()


class TinyLFUPagesMachine(PagesMachine):
    eviction = "tinylfu"


MGR_PS = 3
MGR_PAGES = 12
SYSTEM_PROMPTS = [[], [5, 6, 7, 5, 6, 7], [5, 6, 7, 8], [9] * 7]


TAG = 64  # K/V value = prefix id * TAG + which forward wrote it: same meaning, different bits


class ManagerMachine(RuleBasedStateMachine):
    """KVCacheManager as the scheduler uses it, against a fake model that writes f(prefix).

    Like a real model under different batchings, two forwards of the same prefix write values
    that mean the same (same prefix id) but differ in their low bits (the writer tag), so a
    write into a shared cached page is caught even though it "looks right".
    """

    eviction = "tinylfu"

    def __init__(self):
        super().__init__()
        self.mgr = KVCacheManager(
            1, 1, 1, page_size=MGR_PS, num_pages=MGR_PAGES, dtype=torch.float32, eviction=self.eviction
        )
        self.seqs: dict[int, list[int]] = {}
        self.written: dict[int, int] = {}
        self.prefix_ids: dict[tuple, int] = {}
        self.cached_pages: dict[tuple, list[float]] = {}  # (prefix, page) -> its K values when cached
        self.next_seq = 0
        self.forwards = 0
        self.history: list[list[int]] = []

    def prefix_id(self, tokens: list[int], pos: int) -> int:
        key = tuple(tokens[: pos + 1])
        return self.prefix_ids.setdefault(key, len(self.prefix_ids) + 1)

    def forward(self, seq: int, start: int, end: int) -> None:
        self.forwards += 1
        flat = self.mgr.kv_caches[0][0].view(-1)
        for pos, slot in zip(range(start, end), self.mgr.slot_mapping(seq, start, end), strict=True):
            flat[slot] = float(self.prefix_id(self.seqs[seq], pos) * TAG + self.forwards % TAG)

    def snapshot(self):
        return self.mgr.stats(), {s: self.mgr.block_table(s) for s in self.seqs}

    @precondition(lambda self: len(self.seqs) < 3)  # leave room for a cache to build up and be evicted
    @rule(data=st.data(), system=st.sampled_from(SYSTEM_PROMPTS), user=st.lists(st.integers(0, 2), max_size=7))
    def open(self, data, system, user):
        tokens = system + user
        source = data.draw(st.sampled_from(["new", "history", "cached"]))
        cached_prefixes = sorted(tree_contents(self.mgr.radix)[0])
        if source == "cached" and cached_prefixes:  # exactly a cached prefix: a full hit
            tokens = list(data.draw(st.sampled_from(cached_prefixes)))
        elif source == "history" and self.history:  # a repeat, a resume after preemption, a cut
            seen = data.draw(st.sampled_from(self.history))
            tokens = seen[: data.draw(st.sampled_from(sorted({len(seen), len(seen) // MGR_PS * MGR_PS, 1})))]
        if not tokens:
            return
        seq = self.next_seq
        self.next_seq += 1
        cached = self.mgr.open(seq, tokens)
        assert 0 <= cached <= len(tokens) - 1
        assert cached % MGR_PS == 0 or cached == len(tokens) - 1
        self.seqs[seq], self.written[seq] = tokens, cached

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), k=st.integers(1, 12), new_token=st.integers(0, 2))
    def step(self, data, k, new_token):
        seq = data.draw(st.sampled_from(sorted(self.seqs)))
        tokens = self.seqs[seq]
        start = self.written[seq]
        total = start + k
        while len(tokens) < total:  # decoding: sampled tokens join the sequence
            tokens.append(new_token)
        possible = self.mgr.can_reserve(seq, total)
        before = self.snapshot()
        ok = self.mgr.reserve(seq, total)
        assert ok == possible
        if not ok:
            assert self.snapshot() == before, "a refused reserve changed state"
            return
        assert len(self.mgr.block_table(seq)) == -(-total // MGR_PS)
        self.forward(seq, start, total)
        self.written[seq] = total

    @precondition(lambda self: any(len(t) <= self.written[s] + 1 for s, t in self.seqs.items()))
    @rule(data=st.data(), draft=st.lists(st.integers(0, 2), min_size=1, max_size=9), bonus=st.integers(0, 2))
    def speculate(self, data, draft, bonus):
        """Verify the last token + a draft, accept a prefix of it, give the rest back (truncate)."""
        seq = data.draw(st.sampled_from(sorted(s for s, t in self.seqs.items() if len(t) <= self.written[s] + 1)))
        tokens = self.seqs[seq]
        start = self.written[seq]
        if len(tokens) == start:  # decoding: the token sampled last joins first
            tokens.append(bonus)
        total = start + 1 + len(draft)
        if not self.mgr.reserve(seq, total):
            return
        tokens += draft
        self.forward(seq, start, total)
        accepted = data.draw(st.integers(0, len(draft)))
        keep = start + 1 + accepted
        pages_before = len(self.mgr.block_table(seq))
        freed = self.mgr.truncate(seq, keep)
        assert len(self.mgr.block_table(seq)) == -(-keep // MGR_PS) == pages_before - len(freed)
        del tokens[keep:]
        tokens.append(bonus)  # the token sampled at the first rejected position: not written yet
        self.written[seq] = keep

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def commit(self, data):
        seq = data.draw(st.sampled_from(sorted(self.seqs)))
        self.mgr.commit(seq, self.seqs[seq])

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), cache_it=st.booleans())
    def close(self, data, cache_it):
        seq = data.draw(st.sampled_from(sorted(self.seqs)))
        self.mgr.close(seq, self.seqs[seq] if cache_it else None)
        self.history.append(self.seqs[seq][: self.written[seq]])
        del self.seqs[seq], self.written[seq]

    @invariant()
    def consistent(self):
        self.mgr.check_invariants()
        s = self.mgr.stats()
        assert s.free_pages + s.evictable_pages + s.in_use_pages == s.num_pages
        flat = self.mgr.kv_caches[0][0].reshape(-1).tolist()
        for seq, tokens in self.seqs.items():
            n = self.written[seq]
            slots = self.mgr.slot_mapping(seq, 0, n)
            table = self.mgr.block_table(seq)
            assert slots == [table[p // MGR_PS] * MGR_PS + p % MGR_PS for p in range(n)]
            got = [int(flat[slot]) // TAG for slot in slots]
            assert got == [self.prefix_id(tokens, p) for p in range(n)], f"sequence {seq} reads wrong K/V"
        # nobody ever writes into a page while the prefix cache holds it
        tree, _ = tree_contents(self.mgr.radix)
        live = set()
        for prefix, page in tree.items():
            key = (prefix, page)
            live.add(key)
            values = flat[page * MGR_PS : (page + 1) * MGR_PS]
            assert self.cached_pages.setdefault(key, values) == values, f"cached page {page} was overwritten"
            start = len(prefix) - MGR_PS
            assert [int(v) // TAG for v in values] == [self.prefix_id(list(prefix), p) for p in range(start, len(prefix))]
        self.cached_pages = {k: v for k, v in self.cached_pages.items() if k in live}

    def teardown(self):
        for seq in list(self.seqs):
            self.mgr.close(seq)
        self.mgr.check_invariants()
        assert self.mgr.stats().in_use_pages == 0
        self.mgr.clear_prefix_cache()
        assert self.mgr.num_free_pages() == MGR_PAGES


class LRUManagerMachine(ManagerMachine):
    eviction = "lru"


TestPages = PagesMachine.TestCase
TestPages.settings = SETTINGS
TestPagesTinyLFU = TinyLFUPagesMachine.TestCase
TestPagesTinyLFU.settings = settings(SETTINGS, max_examples=60)
TestManager = ManagerMachine.TestCase
TestManager.settings = SETTINGS
TestManagerLRU = LRUManagerMachine.TestCase
TestManagerLRU.settings = settings(SETTINGS, max_examples=60)


def test_errors_are_cache_errors():
    for error in (StaleHandleError, DoubleFreeError, OutOfPagesError, LockError, PageLengthError):
        assert issubclass(error, CacheError)
