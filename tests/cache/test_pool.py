"""PagePool: lowest-free allocation, refcounts, generations and misuse that changes nothing."""

import pytest
from astrai.cache import CacheError, DoubleFreeError, OutOfPagesError, PageHandle, PagePool, StaleHandleError


def snapshot(pool: PagePool):
    return (
        pool.num_free,
        [pool.refcount(p) for p in range(pool.num_pages)],
        [pool.generation(p) for p in range(pool.num_pages)],
    )


def test_allocates_lowest_free_page_across_words():
    pool = PagePool(200)  # spans four 64-bit words
    handles = pool.allocate_many(200)
    assert [h.page for h in handles] == list(range(200))
    assert pool.num_free == 0
    for page in (150, 3, 64, 199):
        pool.decref(handles[page])
    assert [pool.allocate().page for _ in range(4)] == [3, 64, 150, 199]
    pool.check_invariants()


def test_refcount_frees_only_when_last_holder_lets_go():
    pool = PagePool(4)
    h = pool.allocate()
    pool.incref(h)
    assert pool.refcount(h.page) == 2
    assert pool.decref(h) is False
    assert not pool.is_free(h.page)
    assert pool.decref(h) is True
    assert pool.is_free(h.page) and pool.num_free == 4
    pool.check_invariants()


def test_generation_bumps_on_free_and_reuse_is_detected():
    pool = PagePool(2)
    old = pool.allocate()
    pool.decref(old)
    new = pool.allocate()
    assert new.page == old.page and new.generation == old.generation + 1
    before = snapshot(pool)
    with pytest.raises(StaleHandleError):
        pool.incref(old)
    with pytest.raises(StaleHandleError):
        pool.decref(old)
    assert snapshot(pool) == before


def test_double_free_raises_and_changes_nothing():
    pool = PagePool(3)
    h = pool.allocate()
    pool.decref(h)
    before = snapshot(pool)
    with pytest.raises(DoubleFreeError):
        pool.decref(h)
    assert snapshot(pool) == before
    with pytest.raises(CacheError):
        pool.decref(PageHandle(1, 0))  # never allocated
    assert snapshot(pool) == before


def test_allocating_more_than_free_is_all_or_nothing():
    pool = PagePool(5)
    pool.allocate_many(3)
    before = snapshot(pool)
    with pytest.raises(OutOfPagesError):
        pool.allocate_many(3)
    assert snapshot(pool) == before
    pool.allocate_many(2)
    with pytest.raises(OutOfPagesError):
        pool.allocate()


def test_out_of_range_and_bad_sizes():
    pool = PagePool(4)
    with pytest.raises(CacheError, match="out of range"):
        pool.check(PageHandle(4, 0))
    with pytest.raises(ValueError):
        PagePool(0)
    with pytest.raises(ValueError):
        pool.allocate_many(-1)
