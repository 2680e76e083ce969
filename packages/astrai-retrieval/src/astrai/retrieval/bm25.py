"""An incremental BM25 inverted index, Lucene's variant.

    score(q, d) = sum over query tokens t (repeats count) present in d of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(Lucene >= 8 dropped the constant (k1 + 1) numerator factor, which does not change the order;
bm25s' "lucene" method computes the same numbers.) N, df and avgdl always describe the live
documents only, so an index built by any sequence of add / delete scores exactly like a fresh
build of the documents that remain.

Layout: per term, a growable posting list of (slot, tf) pairs; per document slot its length and
its own (term, tf) list, which delete uses to fix df and which compaction uses to rebuild.
Deleted slots stay in the posting lists, masked at query time, until more than
`max_deleted_fraction` of the slots are dead; then `compact()` rebuilds the lists without them.
Not thread-safe: callers serialise writers against readers (VectorStore does).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

import numpy as np


class BM25Index:
    """Lucene BM25 over token lists; documents are identified by non-negative integer ids."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75, max_deleted_fraction: float = 0.25) -> None:
        if not (k1 >= 0 and math.isfinite(k1)):
            raise ValueError(f"k1 must be a finite number >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b}")
        self.k1 = float(k1)
        self.b = float(b)
        self.max_deleted_fraction = max_deleted_fraction
        self._vocab: dict[str, int] = {}
        self._post_slots: list[array] = []  # per term id: slots ('i')
        self._post_tfs: list[array] = []    # per term id: term frequencies ('f')
        self._df = np.zeros(0, dtype=np.int64)
        self._slot_of: dict[int, int] = {}
        self._doc_ids = array("q")          # per slot: the document id (-1: deleted)
        self._lengths = array("f")          # per slot: the document length in tokens
        self._terms: list[tuple[array, array] | None] = []  # per slot: (term ids, tfs)
        self._total_length = 0
        self._dead = 0
        self._norm_cache: tuple[tuple[int, int, int], np.ndarray] | None = None  # (statistics, norm)

    # --- size and statistics ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot_of

    @property
    def avgdl(self) -> float:
        return self._total_length / len(self._slot_of) if self._slot_of else 0.0

    def df(self, term: str) -> int:
        """How many live documents contain `term`."""
        tid = self._vocab.get(term)
        return 0 if tid is None else int(self._df[tid])

    def idf(self, term: str) -> float:
        df = self.df(term)
        n = len(self._slot_of)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def doc_ids(self) -> list[int]:
        return list(self._slot_of)

    # --- writing ----------------------------------------------------------------------------

    def add(self, doc_id: int, tokens: Sequence[str]) -> None:
        """Index a document; an id already present is replaced (delete, then add)."""
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, np.integer)) or doc_id < 0:
            raise ValueError(f"document ids must be non-negative integers, got {doc_id!r}")
        doc_id = int(doc_id)
        if doc_id in self._slot_of:
            self.delete(doc_id)
        counts = Counter(tokens)
        slot = len(self._doc_ids)
        term_ids = array("i")
        tfs = array("f")
        vocab = self._vocab
        for term, tf in counts.items():
            tid = vocab.get(term)
            if tid is None:
                tid = vocab[term] = len(vocab)
                self._post_slots.append(array("i"))
                self._post_tfs.append(array("f"))
            self._post_slots[tid].append(slot)
            self._post_tfs[tid].append(tf)
            term_ids.append(tid)
            tfs.append(tf)
        if len(vocab) > len(self._df):
            grown = np.zeros(max(len(vocab), 2 * len(self._df)), dtype=np.int64)
            grown[: len(self._df)] = self._df
            self._df = grown
        self._df[np.frombuffer(term_ids, dtype=np.int32)] += 1
        self._slot_of[doc_id] = slot
        self._doc_ids.append(doc_id)
        self._lengths.append(len(tokens))
        self._terms.append((term_ids, tfs))
        self._total_length += len(tokens)

    def add_many(self, docs: Iterable[tuple[int, Sequence[str]]]) -> None:
        for doc_id, tokens in docs:
            self.add(doc_id, tokens)

    def delete(self, doc_id: int) -> bool:
        """Remove a document; False if it was not indexed."""
        slot = self._slot_of.pop(doc_id, None)
        if slot is None:
            return False
        term_ids, _ = self._terms[slot]  # type: ignore[misc]
        self._df[np.frombuffer(term_ids, dtype=np.int32)] -= 1
        self._total_length -= int(self._lengths[slot])
        self._terms[slot] = None
        self._doc_ids[slot] = -1
        self._dead += 1
        if self._dead > self.max_deleted_fraction * len(self._doc_ids):
            self.compact()
        return True

    def compact(self) -> None:
        """Rebuild the posting lists without deleted slots (slots are renumbered; ids are not)."""
        live = [(int(self._doc_ids[s]), self._terms[s], self._lengths[s]) for s in range(len(self._doc_ids))
                if self._doc_ids[s] >= 0]
        self._post_slots = [array("i") for _ in self._vocab]
        self._post_tfs = [array("f") for _ in self._vocab]
        self._slot_of = {}
        self._doc_ids = array("q")
        self._lengths = array("f")
        self._terms = []
        for slot, (doc_id, terms, length) in enumerate(live):
            term_ids, tfs = terms  # type: ignore[misc]
            for tid, tf in zip(term_ids, tfs, strict=True):
                self._post_slots[tid].append(slot)
                self._post_tfs[tid].append(tf)
            self._slot_of[doc_id] = slot
            self._doc_ids.append(doc_id)
            self._lengths.append(length)
            self._terms.append(terms)
        self._dead = 0
        self._norm_cache = None

    # --- reading ----------------------------------------------------------------------------

    def _norm(self) -> np.ndarray:
        """k1 * (1 - b + b * |d| / avgdl) per slot, cached until the statistics change."""
        key = (len(self._doc_ids), self._total_length, len(self._slot_of))
        cached = self._norm_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        lengths = np.frombuffer(self._lengths, dtype=np.float32)
        avgdl = self.avgdl or 1.0
        norm = (self.k1 * (1 - self.b + self.b * lengths / np.float32(avgdl))).astype(np.float32)
        self._norm_cache = (key, norm)
        return norm

    def _query_terms(self, query_tokens: Sequence[str]) -> list[tuple[int, float]]:
        """(term id, multiplicity * idf) for each distinct query term present in the index."""
        n = len(self._slot_of)
        out = []
        for term, count in Counter(query_tokens).items():
            tid = self._vocab.get(term)
            if tid is None or self._df[tid] <= 0:
                continue
            df = float(self._df[tid])
            out.append((tid, count * math.log(1 + (n - df + 0.5) / (df + 0.5))))
        return out

    def scores(self, query_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(document ids, scores) of every live document matching at least one query term."""
        terms = self._query_terms(query_tokens)
        if not terms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        norm = self._norm()
        acc = np.zeros(len(self._doc_ids), dtype=np.float32)
        for tid, weight in terms:
            slots = np.frombuffer(self._post_slots[tid], dtype=np.int32)
            tf = np.frombuffer(self._post_tfs[tid], dtype=np.float32)
            acc[slots] += np.float32(weight) * tf / (tf + norm[slots])
        doc_ids = np.frombuffer(self._doc_ids, dtype=np.int64)
        hit = (acc > 0) & (doc_ids >= 0)
        return doc_ids[hit], acc[hit]

    def search(self, query_tokens: Sequence[str], k: int = 10, *,
               allowed: Collection[int] | None = None) -> list[tuple[int, float]]:
        """The top `k` (document id, score), best first, ties by the smaller id; only documents
        matching at least one query term, and only ids in `allowed` when it is given."""
        if k <= 0:
            return []
        ids, scores = self.scores(query_tokens)
        if allowed is not None and len(ids):
            keep = np.isin(ids, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            ids, scores = ids[keep], scores[keep]
        if len(ids) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth
            ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]

    def score(self, query_tokens: Sequence[str], doc_id: int) -> float:
        """One document's score (0.0 if it matches no query term); KeyError if not indexed."""
        slot = self._slot_of[doc_id]
        term_ids, tfs = self._terms[slot]  # type: ignore[misc]
        tf_of = dict(zip(term_ids, tfs, strict=True))
        norm = self.k1 * (1 - self.b + self.b * self._lengths[slot] / (self.avgdl or 1.0))
        total = 0.0
        for tid, weight in self._query_terms(query_tokens):
            tf = tf_of.get(tid)
            if tf is not None:
                total += weight * tf / (tf + norm)
        return total
