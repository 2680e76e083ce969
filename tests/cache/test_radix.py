"""RadixCache: exact page-aligned matching, splits, duplicate-free inserts, locks and eviction."""

import pytest
from astrai.cache import (
    CacheError,
    CacheInvariantError,
    LockError,
    LRUPolicy,
    PageLengthError,
    PagePool,
    PageTable,
    RadixCache,
)

PS = 4


def make(num_pages=64, eviction="lru"):
    pool = PagePool(num_pages)
    return pool, RadixCache(pool, PS, eviction=eviction)


def cache_tokens(pool, radix, tokens):
    """Allocate pages for `tokens`' full pages, insert them, drop our own references."""
    t = PageTable(pool, PS)
    t.grow(len(tokens) // PS * PS)
    tree, node = radix.insert(tokens[: len(t) * PS], t.handles)
    t.release()
    return [h.page for h in tree], node


def matched_pages(radix, tokens):
    handles, _ = radix.match(tokens)
    return [h.page for h in handles]


BASE = list(range(100, 124))  # 24 tokens = 6 pages


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 7, 8, 9, 23, 24, 25, 30])
def test_prefix_lengths_around_page_boundaries(length):
    pool, radix = make()
    pages, _ = cache_tokens(pool, radix, BASE)
    query = (BASE + [7, 7, 7, 7, 7, 7])[:length]
    expected = min(length, 24) // PS
    assert matched_pages(radix, query) == pages[:expected]
    radix.check_invariants()


@pytest.mark.parametrize("position", range(24))
def test_one_differing_token_never_matches_its_page(position):
    pool, radix = make()
    pages, _ = cache_tokens(pool, radix, BASE)
    query = list(BASE)
    query[position] = 999
    assert matched_pages(radix, query) == pages[: position // PS]
    # the mismatching lookup split the node but lost nothing
    assert matched_pages(radix, BASE) == pages
    radix.check_invariants()


def test_partial_match_splits_and_branches_share_the_head():
    pool, radix = make()
    a, _ = cache_tokens(pool, radix, BASE)
    other = BASE[:8] + [1, 2, 3, 4, 5, 6, 7, 8]
    b, _ = cache_tokens(pool, radix, other)
    assert b[:2] == a[:2] and set(b[2:]).isdisjoint(a)
    assert radix.num_nodes == 3 and radix.num_pages == 8
    assert matched_pages(radix, other) == b
    assert matched_pages(radix, BASE) == a
    radix.check_invariants()


def test_insert_returns_tree_pages_and_duplicates_are_freed_not_leaked():
    pool, radix = make()
    first, _ = cache_tokens(pool, radix, BASE)
    free_before = pool.num_free
    second, _ = cache_tokens(pool, radix, BASE)  # computed again by another sequence
    assert second == first
    assert pool.num_free == free_before  # the duplicate pages went straight back
    assert radix.num_pages == 6
    radix.check_invariants()


def test_insert_wrong_length_and_repeated_pages_change_nothing():
    pool, radix = make()
    t = PageTable(pool, PS)
    t.grow(8)
    with pytest.raises(PageLengthError):
        radix.insert(BASE[:7], t.handles)
    with pytest.raises(PageLengthError):
        radix.insert(BASE[:9], t.handles)
    with pytest.raises(CacheError, match="twice"):
        radix.insert(BASE[:8], [t.handles[0], t.handles[0]])
    assert radix.num_pages == 0 and all(pool.refcount(p) == 1 for p in t.pages)
    radix.insert(BASE[:8], t.handles)
    with pytest.raises(CacheError, match="twice"):  # same pages under other tokens
        radix.insert([1] * 8, t.handles)
    radix.check_invariants()


def test_locked_prefixes_survive_eviction_and_unlock_below_zero_raises():
    pool, radix = make(num_pages=12)
    cache_tokens(pool, radix, BASE[:8])
    handles, node = radix.match(BASE[:8])
    radix.lock(node)
    cache_tokens(pool, radix, [5] * 8)
    assert radix.evictable_pages == 2
    freed = radix.evict(10)
    assert len(freed) == 2 and radix.num_pages == 2
    assert matched_pages(radix, BASE[:8]) == [h.page for h in handles]
    radix.unlock(node)
    with pytest.raises(LockError):
        radix.unlock(node)
    assert radix.evictable_pages == 2
    radix.check_invariants()
    assert len(radix.evict(10)) == 2 and pool.num_free == 12


def test_lru_evicts_least_recently_used_leaf_tail_first():
    pool, radix = make(num_pages=32)
    a, _ = cache_tokens(pool, radix, [1] * 12)
    b, _ = cache_tokens(pool, radix, [2] * 12)
    c, _ = cache_tokens(pool, radix, [3] * 12)
    radix.match([1] * 12)  # a is now the most recent
    assert radix.evict(2) == [b[2], b[1]]  # b's tail first
    assert radix.evict(2) == [b[0], c[2]]
    assert matched_pages(radix, [1] * 12) == a
    assert matched_pages(radix, [3] * 12) == c[:2]
    radix.check_invariants()


def test_parent_becomes_evictable_after_its_children():
    pool, radix = make(num_pages=32)
    shared = [9] * 8
    cache_tokens(pool, radix, shared + [1] * 4)
    cache_tokens(pool, radix, shared + [2] * 4)
    assert radix.num_nodes == 3
    assert len(radix.evict(4)) == 4 and radix.num_pages == 0 and radix.num_nodes == 0
    radix.check_invariants()


def test_tinylfu_keeps_a_hot_prefix_that_lru_evicts():
    hot = list(range(1000, 1016))

    def run(eviction):
        pool, radix = make(num_pages=16, eviction=eviction)
        cache_tokens(pool, radix, hot)
        for _ in range(20):
            radix.match(hot + [1, 2, 3, 4])
        for i in range(6):  # a burst of one-off prompts, two pages each
            radix.evict(max(0, 2 - pool.num_free))
            cache_tokens(pool, radix, [i] * 8)
        radix.evict(max(0, 2 - pool.num_free))
        radix.check_invariants()
        return len(matched_pages(radix, hot))

    assert run("tinylfu") == 4
    assert run("lru") < 4


def test_unknown_eviction_policy():
    with pytest.raises(ValueError, match="eviction"):
        make(eviction="fifo")


def test_locking_an_evicted_node_raises():
    pool, radix = make()
    _, node = cache_tokens(pool, radix, BASE[:8])
    radix.evict(2)
    with pytest.raises(LockError, match="evicted"):
        radix.lock(node)
    with pytest.raises(LockError):
        radix.unlock(node)
    radix.check_invariants()


def test_a_policy_object_decides_the_eviction_order():
    class LongestFirst(LRUPolicy):
        """Evicts the leaf with the most pages first, whatever its recency."""

        name = "longest-first"

        def priority(self, node):
            return -len(node.pages), node.last_access

    pool, radix = make(eviction=LongestFirst(PS))
    assert radix.eviction == "longest-first"
    cache_tokens(pool, radix, [7] * 8)  # a two-page leaf
    cache_tokens(pool, radix, [9] * 4)  # a one-page leaf
    radix.match([7] * 8)  # the two-page leaf is now the most recent: LRU would trim the other
    assert radix.evict(1)
    assert len(matched_pages(radix, [9] * 4)) == 1 and len(matched_pages(radix, [7] * 8)) == 1
    radix.check_invariants()


def test_peek_neither_splits_nor_counts_a_use():
    pool, radix = make(eviction="tinylfu")
    cache_tokens(pool, radix, BASE[:12])  # one node of three pages
    sketch = radix.policy.sketch
    root_child = next(iter(radix.root.children.values()))
    before = (radix.num_nodes, root_child.last_access, sketch.estimate(root_child.freq_key))
    assert radix.peek(BASE[:8] + [999] * 4) == (2, 2)  # two of the three pages match, both unlocked
    assert (radix.num_nodes, root_child.last_access, sketch.estimate(root_child.freq_key)) == before
    handles, node = radix.match(BASE[:8] + [999] * 4)  # match splits and counts
    assert len(handles) == 2 and radix.num_nodes == 2
    radix.lock(node)
    assert radix.peek(BASE[:12]) == (3, 1)  # the locked upper part is not evictable
    radix.check_invariants()


def test_check_invariants_raises_a_cache_error_not_an_assertion():
    pool, radix = make()
    cache_tokens(pool, radix, BASE[:8])
    radix._num_pages += 1  # corrupt a counter
    with pytest.raises(CacheInvariantError, match="counter says"):
        radix.check_invariants()
