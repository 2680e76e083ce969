"""KVCacheManager: the scheduler's view — open, reserve, slots, commit, close, COW, pressure."""

import pytest
import torch
from astrai.cache import CacheError, CacheEvent, KVCacheManager, UnknownSequenceError

PS = 4


def make(num_pages=16, **kw):
    mgr = KVCacheManager(2, 1, 2, page_size=PS, num_pages=num_pages, dtype=torch.float32, **kw)
    events: list[CacheEvent] = []
    mgr.subscribe(events.append)
    return mgr, events


def write(mgr, seq, tokens, start, end):
    """Stand-in for the model's forward: K/V of position p = a value determined by tokens[:p+1]."""
    slots = mgr.slot_mapping(seq, start, end)
    for layer, (k, v) in enumerate(mgr.kv_caches):
        for pos, slot in zip(range(start, end), slots, strict=True):
            value = float(hash(tuple(tokens[: pos + 1])) % 100_003 + layer)
            k.view(-1, k.shape[-2], k.shape[-1])[slot] = value
            v.view(-1, v.shape[-2], v.shape[-1])[slot] = -value


def assert_kv(mgr, seq, tokens, end):
    slots = mgr.slot_mapping(seq, 0, end)
    for layer, (k, v) in enumerate(mgr.kv_caches):
        for pos, slot in enumerate(slots):
            value = float(hash(tuple(tokens[: pos + 1])) % 100_003 + layer)
            assert k.view(-1, k.shape[-2], k.shape[-1])[slot].eq(value).all(), f"K of position {pos}"
            assert v.view(-1, v.shape[-2], v.shape[-1])[slot].eq(-value).all(), f"V of position {pos}"


def run_prompt(mgr, seq, tokens, close=True):
    cached = mgr.open(seq, tokens)
    assert mgr.reserve(seq, len(tokens))
    write(mgr, seq, tokens, cached, len(tokens))
    assert_kv(mgr, seq, tokens, len(tokens))
    if close:
        mgr.close(seq, tokens)
    mgr.check_invariants()
    return cached


def test_sizes_and_views():
    mgr, _ = make(num_pages=10)
    assert mgr.num_pages == 10 and mgr.page_size == PS and mgr.capacity_tokens == 40
    assert mgr.capacity_bytes == 10 * 2 * 2 * PS * 1 * 2 * 4
    assert len(mgr.kv_caches) == 2 and mgr.kv_caches[0][0].shape == (10, PS, 1, 2)


def test_prefix_reuse_reports_cached_tokens_and_serves_exact_kv():
    mgr, events = make()
    prompt = list(range(10, 20))  # 10 tokens: 2 full pages + 2
    assert run_prompt(mgr, "a", prompt) == 0
    assert mgr.num_cached_pages() == 2 and mgr.num_evictable_pages() == 2
    follow = prompt + [7, 8, 9]
    assert run_prompt(mgr, "b", follow, close=False) == 8
    assert mgr.block_table("b")[:2] == [0, 1]
    assert [e.kind for e in events if e.seq_id == "b"][:1] == ["shared"]
    s = mgr.stats()
    assert s.tokens_queried == 23 and s.tokens_hit == 8 and s.cow_copies == 0
    assert s.free_pages + s.evictable_pages + s.in_use_pages == s.num_pages
    mgr.close("b")
    assert mgr.stats().in_use_pages == 0


@pytest.mark.parametrize("length", [7, 8, 9, 12])
def test_full_hit_leaves_the_last_token_to_recompute_with_copy_on_write(length):
    mgr, events = make()
    prompt = list(range(50, 50 + length))
    run_prompt(mgr, "a", prompt)
    cached = mgr.open("b", prompt)
    assert cached == min(length - 1, length // PS * PS)
    shared = mgr.block_table("b")
    assert mgr.reserve("b", length)
    copies = [e.pages for e in events if e.kind == "copied"]
    if length % PS == 0:  # the last prompt token sits in a shared page: copied before writing
        assert copies == [[(shared[-1], mgr.block_table("b")[-1])]]
        assert mgr.block_table("b")[-1] != shared[-1]
    else:
        assert copies == []
    write(mgr, "b", prompt, cached, length)
    assert_kv(mgr, "b", prompt, length)
    mgr.check_invariants()
    # the cached original still holds its data: a third reader gets exact K/V
    mgr.close("b", prompt)
    run_prompt(mgr, "c", prompt)
    assert mgr.stats().in_use_pages == 0


def test_decode_grows_a_page_at_a_time_and_slot_mapping_is_cheap_and_exact():
    mgr, events = make()
    tokens = list(range(6))
    mgr.open("s", tokens)
    assert mgr.reserve("s", 6) and len(mgr.block_table("s")) == 2
    write(mgr, "s", tokens, 0, 6)
    for step in range(6):
        tokens.append(100 + step)
        n = len(tokens)
        assert mgr.reserve("s", n)
        assert len(mgr.block_table("s")) == -(-n // PS)
        table = mgr.block_table("s")
        assert mgr.slot_mapping("s", n - 1, n) == [table[(n - 1) // PS] * PS + (n - 1) % PS]
        write(mgr, "s", tokens, n - 1, n)
    assert_kv(mgr, "s", tokens, len(tokens))
    assert [len(e.pages) for e in events if e.kind == "allocated"] == [2, 1]  # 6 tokens, then 12: 3 pages in all
    mgr.check_invariants()


def test_commit_caches_only_written_pages_and_dedups_against_the_tree():
    mgr, events = make()
    prompt = list(range(30, 42))  # 3 pages
    mgr.open("a", prompt)
    mgr.open("b", prompt)  # nothing cached yet: both compute the same prefix
    for s in ("a", "b"):
        assert mgr.reserve(s, 6)  # chunked prefill: first 6 tokens
        write(mgr, s, prompt, 0, 6)
    mgr.commit("a", prompt)  # only the first (full, written) page may enter the cache
    assert mgr.num_cached_pages() == 1
    b_first = mgr.block_table("b")[0]
    mgr.commit("b", prompt)  # b's own copy is a duplicate: switched to the tree's, freed
    assert mgr.block_table("b")[0] == mgr.block_table("a")[0] != b_first
    assert events[-1] == CacheEvent("freed", [b_first], "b")
    mgr.check_invariants()
    for s in ("a", "b"):
        assert mgr.reserve(s, 12)
        write(mgr, s, prompt, 6, 12)
        assert_kv(mgr, s, prompt, 12)
    mgr.close("a", prompt + [1])  # the unwritten sampled token never reaches the cache
    mgr.close("b", prompt)
    mgr.check_invariants()
    assert mgr.num_cached_pages() == 3 and mgr.stats().in_use_pages == 0


def test_eviction_under_pressure_and_refusal_without_change():
    mgr, events = make(num_pages=6)
    run_prompt(mgr, "old", [1] * 16)  # 4 cached pages, all evictable
    assert mgr.num_free_pages() == 2 and mgr.num_evictable_pages() == 4
    mgr.open("big", [2] * 20)
    assert mgr.can_reserve("big", 20) is True
    assert mgr.can_reserve("big", 28) is False
    before = (mgr.block_table("big"), mgr.stats())
    assert mgr.reserve("big", 28) is False
    assert (mgr.block_table("big"), mgr.stats()) == before
    assert mgr.reserve("big", 20)
    evicted = [p for e in events if e.kind == "evicted" for p in e.pages]
    assert len(evicted) == 3 and mgr.stats().evicted_pages == 3
    mgr.check_invariants()
    # pages a running sequence uses are never evicted
    mgr.open("user", [1] * 4 + [3])
    assert mgr.reserve("user", 5) is False  # the last cached page is locked by "user"
    mgr.close("big")
    assert mgr.reserve("user", 5)
    mgr.close("user")
    mgr.check_invariants()
    assert mgr.clear_prefix_cache() == 1 and mgr.num_free_pages() == 6


def test_prefix_cache_off_shares_nothing():
    mgr, _ = make(enable_prefix_cache=False)
    prompt = list(range(12))
    assert run_prompt(mgr, "a", prompt) == 0
    assert run_prompt(mgr, "b", prompt) == 0
    assert mgr.num_cached_pages() == 0 and mgr.num_free_pages() == 16


def test_misuse_of_sequence_ids():
    mgr, _ = make()
    mgr.open("a", [1, 2, 3])
    with pytest.raises(UnknownSequenceError, match="already open"):
        mgr.open("a", [1])
    for call in (lambda: mgr.reserve("x", 3), lambda: mgr.block_table("x"), lambda: mgr.close("x")):
        with pytest.raises(UnknownSequenceError, match="not open"):
            call()
    mgr.close("a")
    with pytest.raises(UnknownSequenceError):
        mgr.close("a")
    mgr.check_invariants()


def test_unsubscribe_and_budget_sizing():
    mgr = KVCacheManager(2, 1, 2, page_size=PS, memory_budget_bytes=1000, dtype=torch.float32)
    assert mgr.num_pages == 1000 // (2 * 2 * PS * 2 * 4)
    seen = []
    unsubscribe = mgr.subscribe(seen.append)
    mgr.open("a", [1, 2])
    mgr.reserve("a", 2)
    unsubscribe()
    mgr.close("a")
    assert [e.kind for e in seen] == ["allocated"]


def test_commit_of_tokens_that_do_not_extend_the_prompt_is_refused():
    mgr, _ = make()
    prompt = list(range(8))
    mgr.open("a", prompt)
    mgr.reserve("a", 8)
    with pytest.raises(CacheError, match="do not start with the prompt"):
        mgr.close("a", [99] + prompt[1:])
    assert mgr.num_cached_pages() == 0 and mgr.has_sequence("a")
    mgr.close("a", prompt)
    assert mgr.num_cached_pages() == 2
    mgr.check_invariants()


def test_lookup_reports_what_open_finds_and_changes_nothing():
    mgr, events = make(num_pages=8)
    prompt = list(range(1, 13))  # three pages
    run_prompt(mgr, "a", prompt)
    sketch = mgr.radix.policy.sketch
    node = next(iter(mgr.radix.root.children.values()))
    before = (mgr.stats(), mgr.radix.num_nodes, node.last_access, sketch.estimate(node.freq_key), len(events))
    longer = prompt + [50, 51, 52, 53, 54]
    for _ in range(20):
        look = mgr.lookup(longer, len(longer) + 3)
    assert (mgr.stats(), mgr.radix.num_nodes, node.last_access, sketch.estimate(node.freq_key), len(events)) == before
    assert look.cached_tokens == 12
    assert look.pages_needed == 2  # positions 12..19: pages 3 and 4, nothing shared to copy
    assert look.pages_available == mgr.num_free_pages()  # the three cached pages would be locked
    assert look.fits
    assert mgr.open("b", longer) == look.cached_tokens
    assert mgr.can_reserve("b", len(longer) + 3) and mgr.reserve("b", len(longer) + 3)
    assert len(mgr.block_table("b")) == 3 + look.pages_needed
    mgr.check_invariants()


def test_lookup_of_a_full_hit_counts_the_copy_on_write_page():
    mgr, _ = make(num_pages=6)
    prompt = list(range(1, 9))  # two full pages
    run_prompt(mgr, "a", prompt)
    look = mgr.lookup(prompt)
    assert look.cached_tokens == 7  # the last token is always recomputed ...
    assert look.pages_needed == 1  # ... in a private copy of the shared last page
    mgr.open("b", prompt)
    pages_before = mgr.num_free_pages()
    assert mgr.reserve("b", len(prompt)) and pages_before - mgr.num_free_pages() == 1
    mgr.check_invariants()


def test_lookup_without_room_does_not_fit():
    mgr, _ = make(num_pages=4)
    mgr.open("big", list(range(12)))
    assert mgr.reserve("big", 12)  # three of four pages in use
    look = mgr.lookup(list(range(100, 112)))
    assert (look.cached_tokens, look.pages_needed, look.pages_available, look.fits) == (0, 3, 1, False)


def test_truncate_gives_back_rejected_speculative_pages_and_keeps_accepted_kv():
    mgr, events = make()
    tokens = list(range(50, 57))  # 7 tokens: pages 0-1
    mgr.open("s", tokens)
    assert mgr.reserve("s", 7)
    write(mgr, "s", tokens, 0, 7)
    before = mgr.num_free_pages()
    # Verification of the last token + 6 proposals: positions [6, 13) reserved, 2 pages more.
    draft = [1, 2, 3, 4, 5, 6]
    assert mgr.pages_to_reserve("s", 13) == 2
    assert mgr.reserve("s", 13) and len(mgr.block_table("s")) == 4
    write(mgr, "s", tokens + draft, 6, 13)
    # Two proposals accepted: positions [0, 9) hold verified K/V, the rest is given back.
    freed = mgr.truncate("s", 9)
    assert len(freed) == 1 and events[-1] == CacheEvent("freed", freed, "s")
    assert len(mgr.block_table("s")) == 3 and mgr.num_free_pages() == before - 1
    assert_kv(mgr, "s", tokens + draft[:2], 9)
    mgr.check_invariants()
    assert mgr.pages_to_reserve("s", 9) == 0 and mgr.pages_to_reserve("s", 13) == 1
    # Truncating within the last page frees nothing; the next reservation reuses the slots.
    assert mgr.reserve("s", 12) and mgr.truncate("s", 10) == []
    assert mgr.reserve("s", 11)
    final = tokens + [1, 2, 9, 9]
    write(mgr, "s", final, 9, 11)
    assert_kv(mgr, "s", final, 11)
    mgr.close("s", final[:11])  # only verified tokens go to the cache
    mgr.check_invariants()
    assert mgr.num_cached_pages() == 2 and mgr.stats().in_use_pages == 0


def test_truncate_never_touches_shared_pages_and_refuses_without_change():
    mgr, _ = make()
    prompt = list(range(10, 22))  # 3 full pages, cached by the first run
    run_prompt(mgr, "a", prompt)
    follow = prompt + [5]
    assert run_prompt(mgr, "b", follow, close=False) == 12  # shares pages 0-2 with the tree
    shared = mgr.block_table("b")[:3]
    assert mgr.reserve("b", 20)
    with pytest.raises(CacheError, match="prefix cache"):
        mgr.truncate("b", 8)  # would drop a cached page
    with pytest.raises(CacheError, match="cannot truncate"):
        mgr.truncate("b", 21)  # beyond what is reserved
    assert mgr.block_table("b")[:3] == shared and len(mgr.block_table("b")) == 5
    mgr.check_invariants()
    assert len(mgr.truncate("b", 13)) == 1  # page 4 back; the shared ones stay
    assert mgr.block_table("b")[:3] == shared
    mgr.check_invariants()
    mgr.close("b")
    mgr.check_invariants()
    assert mgr.num_cached_pages() == 3 and mgr.stats().in_use_pages == 0
