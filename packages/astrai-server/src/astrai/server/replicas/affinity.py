"""Prefix-aware replica choice: the policy alone, with no Ray in it (the router feeds it).

The router cannot see the replicas' radix caches, so it remembers what it sent where: each
prompt is cut into blocks of `block_size` tokens (the engine's page size, the unit its radix
cache shares), and block i is keyed by a hash chained over blocks 0..i, so a key stands for
the whole prefix up to it. A replica "holds" a prefix if the router sent it a prompt starting
with it; the memory is LRU-bounded, as approximate as SGLang's router tree.

The rule, per request:

1. Load L(r) is the requests in flight at replica r. The eligible replicas are those with
   L(r) <= min L + `load_slack`: a replica that is busier than that is skipped however well it
   matches, so a hot prefix spills over to the next replica instead of piling up on one.
2. Among the eligible, take the longest remembered prefix match, if it is at least
   `min_match_tokens` long (shorter shared prefixes, such as a chat template's header, do not
   pin anything).
3. Otherwise, and for ties, the least loaded; then the one holding the fewest remembered
   blocks, so new prefixes spread over the replicas' caches; ties left are broken at random.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_BLOCK_SIZE = 16


@dataclass(frozen=True)
class AffinityRule:
    """The knobs of the rule above; defaults suit a chat system prompt of a few hundred tokens."""

    block_size: int = DEFAULT_BLOCK_SIZE
    min_match_tokens: int = 32
    load_slack: int = 4
    max_entries: int = 200_000  # (prefix block, replica) pairs remembered, LRU beyond that

    def __post_init__(self) -> None:
        for name in ("block_size", "min_match_tokens", "max_entries"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.load_slack < 0:
            raise ValueError(f"load_slack must be >= 0, got {self.load_slack}")


def block_keys(tokens: Sequence[int], block_size: int) -> list[int]:
    """One key per full block: a hash of the block chained onto the key of the prefix before it."""
    keys = []
    key = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        key = hash((key, tuple(tokens[start:start + block_size])))
        keys.append(key)
    return keys


class PrefixIndex:
    """Which replica was recently sent which prompt prefix."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, max_entries: int = 200_000) -> None:
        self.block_size = block_size
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, Hashable], None] = OrderedDict()
        self._held: Counter[Hashable] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def replicas(self) -> list[Hashable]:
        """Replicas with something remembered."""
        return [r for r, n in self._held.items() if n > 0]

    def held(self, replica: Hashable) -> int:
        """Blocks remembered for `replica`."""
        return self._held[replica]

    def insert(self, replica: Hashable, tokens: Sequence[int]) -> None:
        for key in block_keys(tokens, self.block_size):
            entry = (key, replica)
            if entry in self._entries:
                self._entries.move_to_end(entry)
            else:
                self._entries[entry] = None
                self._held[replica] += 1
        while len(self._entries) > self.max_entries:
            (_, evicted), _ = self._entries.popitem(last=False)
            self._held[evicted] -= 1

    def match(self, tokens: Sequence[int], replicas: Sequence[Hashable]) -> dict[Hashable, int]:
        """Tokens of `tokens`' prefix each replica holds (a multiple of block_size)."""
        matched = {r: 0 for r in replicas}
        alive = set(replicas)
        for i, key in enumerate(block_keys(tokens, self.block_size)):
            alive = {r for r in alive if (key, r) in self._entries}
            if not alive:
                break
            for r in alive:
                matched[r] = (i + 1) * self.block_size
        return matched

    def forget(self, keep: set[Hashable]) -> None:
        """Drop what is remembered of replicas not in `keep` (they died or were removed)."""
        for entry in [e for e in self._entries if e[1] not in keep]:
            del self._entries[entry]
        for replica in [r for r in self._held if r not in keep]:
            del self._held[replica]


class AffinityPolicy:
    """Chooses a replica for a prompt by the rule in this module's docstring."""

    def __init__(self, rule: AffinityRule | None = None, rng: random.Random | None = None) -> None:
        self.rule = rule or AffinityRule()
        self.index = PrefixIndex(self.rule.block_size, self.rule.max_entries)
        self._rng = rng or random.Random()

    def choose(self, tokens: Sequence[int] | None, loads: Mapping[Hashable, int]) -> Hashable:
        """The replica for `tokens` given each candidate's load; `loads` must not be empty."""
        if not loads:
            raise ValueError("no replica to choose from")
        least = min(loads.values())
        eligible = [r for r, load in loads.items() if load <= least + self.rule.load_slack]
        if tokens:
            matched = self.index.match(tokens, eligible)
            best = max(matched.values())
            if best >= self.rule.min_match_tokens:
                eligible = [r for r in eligible if matched[r] == best]
        fewest = min(loads[r] for r in eligible)
        eligible = [r for r in eligible if loads[r] == fewest]
        smallest = min(self.index.held(r) for r in eligible)
        return self._rng.choice([r for r in eligible if self.index.held(r) == smallest])

    def record(self, replica: Hashable, tokens: Sequence[int] | None) -> None:
        """Remember that `replica` was sent `tokens` (call once the request is routed)."""
        if tokens:
            self.index.insert(replica, tokens)
