"""PageTable: grows a page at a time, shares zero-copy, copies on write, maps slots by range."""

import pytest
import torch
from astrai.cache import CacheError, KVTensors, OutOfPagesError, PagePool, PageTable


def test_grows_only_when_the_last_page_is_full():
    pool = PagePool(8)
    t = PageTable(pool, 4)
    assert t.grow(1) and len(t) == 1
    assert t.grow(4) == [] and len(t) == 1
    assert len(t.grow(5)) == 1 and len(t) == 2
    assert len(t.grow(12)) == 1 and t.capacity_tokens == 12
    assert t.pages == [0, 1, 2]


def test_grow_beyond_free_raises_and_changes_nothing():
    pool = PagePool(3)
    t = PageTable(pool, 4)
    t.grow(4)
    with pytest.raises(OutOfPagesError):
        t.grow(20)
    assert t.pages == [0] and pool.num_free == 2


@pytest.mark.parametrize("start,end", [(0, 0), (0, 1), (3, 4), (3, 5), (0, 12), (5, 11), (4, 8), (11, 12)])
def test_slots_match_per_token_formula(start, end):
    pool = PagePool(8)
    pool.allocate_many(2)  # so the table's pages are not 0,1,2
    t = PageTable(pool, 4)
    t.grow(12)
    expected = [t.pages[p // 4] * 4 + p % 4 for p in range(start, end)]
    assert t.slots(start, end) == expected


def test_slots_outside_reserved_positions_raise():
    pool = PagePool(4)
    t = PageTable(pool, 4)
    t.grow(5)
    with pytest.raises(CacheError, match="outside"):
        t.slots(6, 9)


def test_attach_shares_and_copy_on_write_keeps_the_other_copy_intact():
    pool = PagePool(6)
    kv = KVTensors(2, 1, 1, page_size=2, num_pages=6, dtype=torch.float32)
    a = PageTable(pool, 2)
    a.grow(4)
    kv.buffer[:, :, a.pages[1]] = 3.0
    b = PageTable(pool, 2)
    b.attach(a.handles)
    assert b.pages == a.pages and all(pool.refcount(p) == 2 for p in a.pages)
    assert a.copy_on_write(0, kv) == (0, 2)  # page 0 was shared: copied to the lowest free page
    old, new = b.copy_on_write(1, kv)
    assert (old, new) == (1, 3) and pool.refcount(1) == 1 and pool.refcount(3) == 1
    assert b.copy_on_write(1, kv) is None  # already private
    assert torch.equal(kv.buffer[:, :, 3], kv.buffer[:, :, 1])
    kv.buffer[:, :, 3] = 9.0  # b writes its own copy
    assert kv.buffer[:, :, a.pages[1]].eq(3.0).all()
    assert sorted(a.release() + b.release()) == [0, 1, 2, 3]
    assert pool.num_free == 6


def test_attach_refuses_stale_handles_and_duplicates():
    pool = PagePool(4)
    a = PageTable(pool, 2)
    a.grow(4)
    handles = list(a.handles)
    b = PageTable(pool, 2)
    b.attach(handles[:1])
    with pytest.raises(CacheError, match="twice"):
        b.attach(handles[:1])
    a.release()
    with pytest.raises(CacheError):
        b.attach(handles[1:])  # page 1 is free now: stale
    assert b.pages == [handles[0].page] and pool.refcount(handles[0].page) == 1
