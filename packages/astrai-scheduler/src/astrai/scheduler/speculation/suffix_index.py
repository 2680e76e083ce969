"""SuffixIndex: token sequences searched the way a suffix tree is walked, for proposals.

Every position of every stored sequence is indexed under the `key_length` tokens before it
(an exact tuple key, never a hash alone). To continue a context, the positions filed under its
last `key_length` tokens are the candidates; each candidate's match is extended backwards (up
to `max_match` tokens) and only the longest matches are kept: the occurrences under the
deepest suffix-tree node the context reaches. Walking forward, the candidates vote for the
next token (its frequency among them is the estimate that it comes next) and those that
disagree drop out, which is a walk down that node's subtree.

Sequences can grow (a running request's context) and be removed (evicting an old output);
removed positions leave the index lazily, and the index is compacted when they outnumber the
live ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

_POS_BITS = 32


@dataclass
class Candidate:
    """One occurrence of the context: `seq[pos]` is what followed it there."""

    seq: list[int]
    pos: int
    index: SuffixIndex
    doc: int


@dataclass
class Walk:
    """A proposed continuation, the estimate for each token, and the sequences it came from."""

    tokens: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    match_length: int = 0
    sources: list[Candidate] = field(default_factory=list)


class SuffixIndex:
    """Sequences of token ids, each position filed under the n-gram before it."""

    def __init__(self, key_length: int = 3) -> None:
        if key_length < 1:
            raise ValueError(f"key_length must be >= 1, got {key_length}")
        self.key_length = key_length
        self._docs: dict[int, list[int]] = {}
        self._refs: dict[tuple[int, ...], list[int]] = {}  # n-gram -> (doc << 32 | pos), oldest first
        self._next_doc = 0
        self._live_refs = 0
        self._dead_refs = 0
        self.num_tokens = 0

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, tokens: Sequence[int]) -> int:
        """Store a new sequence; returns its id."""
        doc = self._next_doc
        self._next_doc += 1
        self._docs[doc] = []
        self.extend(doc, tokens)
        return doc

    def extend(self, doc: int, tokens: Sequence[int]) -> None:
        """Append tokens to a stored sequence, indexing the positions that now have a predecessor n-gram."""
        seq = self._docs[doc]
        start = len(seq)
        seq.extend(tokens)
        n = self.key_length
        refs = self._refs
        base = doc << _POS_BITS
        for pos in range(max(start, n), len(seq)):
            key = tuple(seq[pos - n : pos])
            bucket = refs.get(key)
            if bucket is None:
                refs[key] = [base | pos]
            else:
                bucket.append(base | pos)
            self._live_refs += 1
        self.num_tokens += len(tokens)

    def tokens(self, doc: int) -> list[int]:
        return self._docs[doc]

    def remove(self, doc: int) -> int:
        """Forget a sequence; returns how many tokens it held."""
        seq = self._docs.pop(doc)
        self.num_tokens -= len(seq)
        dead = max(0, len(seq) - self.key_length)
        self._live_refs -= dead
        self._dead_refs += dead
        if self._dead_refs > max(1024, self._live_refs):
            self._compact()
        return len(seq)

    def _compact(self) -> None:
        docs = self._docs
        self._refs = {key: kept for key, bucket in self._refs.items()
                      if (kept := [r for r in bucket if r >> _POS_BITS in docs])}
        self._dead_refs = 0

    def candidates(self, context: Sequence[int], limit: int) -> list[Candidate]:
        """The most recent `limit` positions that followed the context's last `key_length` tokens."""
        n = self.key_length
        if len(context) < n:
            return []
        key = tuple(context[-n:])
        bucket = self._refs.get(key)
        if not bucket:
            return []
        docs = self._docs
        out: list[Candidate] = []
        stale = False
        for ref in reversed(bucket):
            doc = ref >> _POS_BITS
            seq = docs.get(doc)
            if seq is None:
                stale = True
                continue
            out.append(Candidate(seq, ref & ((1 << _POS_BITS) - 1), self, doc))
            if len(out) >= limit:
                break
        if stale:  # drop removed sequences' positions from this bucket now
            kept = [r for r in bucket if r >> _POS_BITS in docs]
            self._dead_refs -= len(bucket) - len(kept)
            if kept:
                self._refs[key] = kept
            else:
                del self._refs[key]
        return out


def match_length(cand: Candidate, tail: list[int], known: int) -> int:
    """How many tokens before `cand.pos` equal the end of `tail` (at least `known` do)."""
    seq, pos = cand.seq, cand.pos
    lo, hi = known, min(len(tail), pos)
    end = len(tail)
    while lo < hi:  # binary search: a match of length l implies every shorter one
        mid = (lo + hi + 1) // 2
        if seq[pos - mid : pos] == tail[end - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def deepest_matches(indexes: Sequence[SuffixIndex], context: Sequence[int], *, limit: int,
                    max_match: int) -> tuple[int, list[Candidate]]:
    """The longest match length over every index, and the candidates that reach it and go on."""
    tail = list(context[-max_match:])
    best, kept = 0, []
    for index in indexes:
        for cand in index.candidates(context, limit):
            if cand.pos >= len(cand.seq):
                continue  # nothing follows this occurrence (yet)
            length = match_length(cand, tail, index.key_length)
            if length > best:
                best, kept = length, [cand]
            elif length == best:
                kept.append(cand)
    return best, kept


def match_confidence(length: int) -> float:
    """How likely a continuation is right after a match of `length` tokens: a short match is
    weak evidence (3 tokens: 0.5), a long one strong (15: 0.875, 31: 0.94)."""
    return 1.0 - 2.0 / (length + 1)


def walk(candidates: list[Candidate], max_tokens: int, *, match: int, min_path_prob: float) -> Walk:
    """Follow the candidates forward by majority: each step's token is the most frequent next
    token among them (ties: the most recent occurrence); its estimate is that frequency times
    the confidence of the match it extends (`match` tokens long at the first step, one more at
    each step after). Stop when the path's estimate falls below `min_path_prob` or nothing
    follows."""
    out = Walk(match_length=match)
    path = 1.0
    cands = candidates
    for step in range(max_tokens):
        counts: dict[int, int] = {}
        for c in cands:
            if c.pos < len(c.seq):
                t = c.seq[c.pos]
                counts[t] = counts.get(t, 0) + 1
        if not counts:
            break
        token, count = max(counts.items(), key=lambda item: item[1])  # first max: the most recent
        prob = count / len(cands) * match_confidence(match + step)
        path *= prob
        if path < min_path_prob:
            break
        out.tokens.append(token)
        out.probs.append(prob)
        cands = [Candidate(c.seq, c.pos + 1, c.index, c.doc) for c in cands
                 if c.pos < len(c.seq) and c.seq[c.pos] == token]
        out.sources = cands
    return out
