"""The prefix-affinity rule on its own (no Ray): what it pins, what it spreads, when it spills over."""

from __future__ import annotations

import random

import pytest
from astrai.server.replicas.affinity import AffinityPolicy, AffinityRule, PrefixIndex, block_keys

A, B, C = "replica-a", "replica-b", "replica-c"


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000) for _ in range(n)]


def policy(**rule) -> AffinityPolicy:
    return AffinityPolicy(AffinityRule(block_size=16, **rule), rng=random.Random(0))


def test_block_keys_are_chained_over_the_whole_prefix():
    block = list(range(16))
    one = block_keys(block + block, 16)
    assert len(one) == 2 and one[0] != one[1]  # the same block after a different prefix is another key
    other = block_keys([99] * 16 + block, 16)
    assert other[1] != one[1]
    assert block_keys(block + block + [1, 2, 3], 16) == one  # the partial last block has no key


def test_a_long_shared_prefix_goes_back_to_the_replica_that_holds_it():
    p = policy()
    system = tokens(1, 200)
    first = p.choose(system + tokens(2, 10), {A: 0, B: 0, C: 0})
    p.record(first, system + tokens(2, 10))
    for seed in range(3, 10):
        assert p.choose(system + tokens(seed, 10), {A: 1, B: 1, C: 1}) == first
    assert p.index.match(system + tokens(99, 5), [A, B, C])[first] == 192  # 12 full blocks of the prefix


def test_new_prefixes_spread_over_the_replicas():
    p = policy()
    chosen = []
    for seed in range(6):
        prompt = tokens(seed, 100)
        replica = p.choose(prompt, {A: 0, B: 0, C: 0})
        p.record(replica, prompt)
        chosen.append(replica)
    assert sorted(chosen) == [A, A, B, B, C, C]  # the one holding least takes the next new prefix


def test_a_hot_prefix_spills_over_once_its_replica_is_busier_than_the_slack():
    p = policy(load_slack=4)
    system = tokens(1, 128)
    p.record(A, system)
    assert p.choose(system + [7], {A: 4, B: 0}) == A  # exactly at the bound: still the match
    assert p.choose(system + [7], {A: 5, B: 0}) == B  # past it: the least loaded instead
    p.record(B, system + [7])
    # Both hold it now; the less loaded of the two takes the next one.
    assert p.choose(system + [8], {A: 5, B: 2}) == B
    assert p.choose(system + [8], {A: 1, B: 2}) == A


def test_a_short_shared_prefix_does_not_pin():
    p = policy(min_match_tokens=32)
    header = tokens(1, 20)  # one full block shared: 16 tokens < 32
    p.record(A, header + tokens(2, 50))
    assert p.choose(header + tokens(3, 50), {A: 1, B: 0}) == B  # least loaded wins
    p.record(A, tokens(4, 64))
    assert p.choose(tokens(4, 64), {A: 1, B: 0}) == A  # 64 matched tokens do pin


def test_no_prompt_means_least_loaded():
    p = policy()
    assert p.choose(None, {A: 3, B: 1, C: 2}) == B
    with pytest.raises(ValueError, match="no replica"):
        p.choose(None, {})


def test_the_index_is_bounded_and_forgets_dead_replicas():
    index = PrefixIndex(block_size=16, max_entries=10)
    index.insert(A, tokens(1, 16 * 8))
    index.insert(B, tokens(2, 16 * 8))
    assert len(index) == 10
    assert index.held(A) + index.held(B) == 10 and index.held(B) == 8  # A's oldest blocks went first
    assert index.match(tokens(1, 16 * 8), [A, B])[A] == 0  # A's first blocks are gone, so nothing matches
    index.forget({A})
    assert index.held(B) == 0 and len(index) == index.held(A) == 2
    assert index.match(tokens(2, 16 * 8), [A, B]) == {A: 0, B: 0}


@pytest.mark.parametrize("field,value", [("block_size", 0), ("min_match_tokens", -1), ("load_slack", -1),
                                         ("max_entries", 0)])
def test_rule_rejects_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        AffinityRule(**{field: value})
