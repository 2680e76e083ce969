"""Proposers on plain token lists: what each one guesses, from what, and what it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from astrai.scheduler import SamplingParams
from astrai.scheduler.speculation import Draft, PromptLookupProposer, Proposer, SuffixProposer, make_proposer
from astrai.scheduler.speculation.suffix_index import SuffixIndex, deepest_matches, match_confidence, walk


@dataclass
class Req:
    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)


def test_both_proposers_are_proposers_and_off_is_none():
    assert isinstance(PromptLookupProposer(), Proposer) and isinstance(SuffixProposer(), Proposer)
    assert make_proposer("off", suffix_tokens=10, shared_suffix=False) is None
    with pytest.raises(ValueError, match="speculation must be one of off, ngram, suffix"):
        make_proposer("eagle", suffix_tokens=10, shared_suffix=False)
    with pytest.raises(ValueError, match="needs as many probabilities"):
        Draft([1, 2], [0.5])


def test_suffix_index_finds_positions_and_forgets_removed_sequences():
    index = SuffixIndex(key_length=2)
    a = index.add([1, 2, 3, 4, 1, 2, 5])
    b = index.add([9, 1, 2, 7])
    cands = index.candidates([8, 1, 2], limit=10)  # [1, 2] was followed by 3, 5 (in a) and 7 (in b)
    assert [c.seq[c.pos] for c in cands] == [7, 5, 3]  # most recent first
    assert index.num_tokens == 11 and len(index) == 2
    assert index.remove(b) == 4 and index.num_tokens == 7
    assert [c.seq[c.pos] for c in index.candidates([1, 2], limit=10)] == [5, 3]
    index.extend(a, [1, 2, 6])
    assert [c.seq[c.pos] for c in index.candidates([1, 2], limit=2)] == [6, 5]
    assert index.candidates([4, 4], limit=5) == [] and index.candidates([2], limit=5) == []


def test_deepest_matches_keep_the_longest_and_walk_votes_by_frequency():
    index = SuffixIndex(key_length=2)
    index.add([5, 6, 1, 2, 3, 9])  # ... 6 1 2 -> 3
    index.add([7, 1, 2, 4, 8])  # ... 7 1 2 -> 4
    index.add([7, 1, 2, 4, 9])
    length, cands = deepest_matches([index], [0, 7, 1, 2], limit=10, max_match=8)
    assert length == 3 and sorted(c.seq[c.pos] for c in cands) == [4, 4]  # [6, 1, 2] matches only 2
    found = walk(cands, 5, match=length, min_path_prob=0.0)
    assert found.tokens == [4, 9]  # both agree on 4; then 8 and 9 tie: the most recent wins
    assert found.probs == pytest.approx([match_confidence(3), 0.5 * match_confidence(4)])
    assert match_confidence(3) == 0.5 and match_confidence(31) > 0.9
    short = walk(cands, 5, match=length, min_path_prob=0.4)
    assert short.tokens == [4]  # the path 0.5 * 0.3 fell below 0.4


def test_prompt_lookup_copies_the_most_recent_longest_match():
    proposer = PromptLookupProposer()
    req = Req("a", [10, 11, 12, 13, 14, 20, 11, 12, 13, 15, 16, 30, 12, 13])
    # [12, 13] occurs twice before; the longer match [11, 12, 13] is not the context's tail,
    # so both are 2-token matches: the most recent (followed by 15, 16) is copied.
    (draft,) = proposer.propose([req], [3])
    assert draft.tokens == [15, 16, 30] and draft.probs is None
    req.output_token_ids += [15, 99]
    (draft,) = proposer.propose([req], [4])  # the index caught up with the output: [15, 99] is new
    assert draft.tokens == []
    (draft,) = proposer.propose([Req("b", [1, 2, 3, 1, 2])], [0])
    assert draft.tokens == []
    proposer.finish(req)
    assert proposer.held_tokens == proposer.capacity_tokens == 0


def test_suffix_proposer_learns_from_finished_outputs_of_the_same_tenant_only():
    proposer = SuffixProposer(capacity_tokens=1000)
    story = [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]
    done = Req("first", [1, 2], story, SamplingParams(tenant="alice"))
    proposer.finish(done)
    assert proposer.held_tokens == len(story)
    alice = Req("second", [3, 40, 41, 42], params=SamplingParams(tenant="alice"))
    bob = Req("third", [3, 40, 41, 42], params=SamplingParams(tenant="bob"))
    got_alice, got_bob = proposer.propose([alice, bob], [5, 5])
    assert got_alice.tokens == [43, 44, 45, 46, 47]
    assert all(0 < p <= 1 for p in got_alice.probs)
    assert got_bob.tokens == []  # bob never sees alice's outputs
    shared = SuffixProposer(capacity_tokens=1000, shared=True)
    shared.finish(done)
    assert shared.propose([bob], [3])[0].tokens == [43, 44, 45]


def test_suffix_store_is_bounded_and_evicts_the_least_recently_used_output():
    proposer = SuffixProposer(capacity_tokens=25)
    outputs = [[100 * k + i for i in range(10)] for k in range(1, 4)]
    proposer.finish(Req("r1", [0], outputs[0]))
    proposer.finish(Req("r2", [0], outputs[1]))
    assert proposer.held_tokens == 20
    # r1's output is used by a proposal: it becomes the most recently used one
    assert proposer.propose([Req("q", [5] + outputs[0][:3])], [2])[0].tokens == outputs[0][3:5]
    proposer.finish(Req("r3", [0], outputs[2]))  # 30 > 25: the least recently used (r2) goes
    assert proposer.held_tokens == 20 <= proposer.capacity_tokens
    assert proposer.propose([Req("q2", [5] + outputs[1][:3])], [2])[0].tokens == []
    assert proposer.propose([Req("q3", [5] + outputs[0][:3])], [2])[0].tokens == outputs[0][3:5]
    huge = SuffixProposer(capacity_tokens=4)
    huge.finish(Req("r", [0], list(range(10))))  # longer than the store: its tail is kept
    assert huge.held_tokens == 4


def test_suffix_proposer_follows_the_requests_own_context():
    proposer = SuffixProposer(capacity_tokens=0)
    code = [7, 8, 9, 10, 11, 12, 13, 14]
    req = Req("a", code + [1, 2] + code[:4])
    (draft,) = proposer.propose([req], [6])
    assert draft.tokens[:4] == code[4:8] and len(draft.probs) == len(draft.tokens)
    assert draft.probs == sorted(draft.probs)  # the match grows along the draft: confidence too
