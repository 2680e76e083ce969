"""Suffix speculation (after SuffixDecoding): continuations scored by how often they followed
the deepest match of the context, in the request's own text and in earlier outputs.

Two sources are searched together: the request's prompt + output, and a store of recent
outputs of finished requests of the same tenant (`SamplingParams.tenant`; one store for all
with `shared=True`). The store is bounded in tokens across tenants and evicts the least
recently used output first (an output is used when a proposal follows it). Each proposed token
carries its frequency among the matched occurrences times a confidence that grows with the
length of the match it extends; the walk stops when the path's product falls below
`MIN_PATH_PROB`, so the draft is as long as the statistics support.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .context_index import ContextIndexes
from .proposer import NO_DRAFT, Draft, DraftContext
from .suffix_index import SuffixIndex, deepest_matches, walk

KEY_LENGTH = 3  # tokens a match needs at least
MAX_MATCH = 32  # tokens compared when ranking matches by length
CANDIDATES = 32  # most recent occurrences per source considered
MIN_PATH_PROB = 0.05  # stop walking when the path's estimate falls below this


class OutputStore:
    """Recent outputs, one SuffixIndex per tenant, at most `capacity_tokens` tokens in all (LRU)."""

    def __init__(self, capacity_tokens: int, *, shared: bool) -> None:
        if capacity_tokens < 0:
            raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
        self.capacity_tokens = capacity_tokens
        self.shared = shared
        self._indexes: dict[str | None, SuffixIndex] = {}
        self._lru: OrderedDict[tuple[str | None, int], None] = OrderedDict()
        self.held_tokens = 0

    def _scope(self, tenant: str | None) -> str | None:
        return None if self.shared else tenant

    def index(self, tenant: str | None) -> SuffixIndex | None:
        return self._indexes.get(self._scope(tenant))

    def add(self, tenant: str | None, tokens: Sequence[int]) -> None:
        if len(tokens) <= KEY_LENGTH or self.capacity_tokens == 0:
            return
        tokens = list(tokens[-self.capacity_tokens :])
        scope = self._scope(tenant)
        index = self._indexes.get(scope)
        if index is None:
            index = self._indexes[scope] = SuffixIndex(KEY_LENGTH)
        doc = index.add(tokens)
        self._lru[(scope, doc)] = None
        self.held_tokens += len(tokens)
        while self.held_tokens > self.capacity_tokens:
            (old_scope, old_doc), _ = self._lru.popitem(last=False)
            old_index = self._indexes[old_scope]
            self.held_tokens -= old_index.remove(old_doc)
            if not len(old_index):
                del self._indexes[old_scope]

    def touch(self, tenant: str | None, doc: int) -> None:
        """A proposal followed this output: it is the most recently used now."""
        key = (self._scope(tenant), doc)
        if key in self._lru:
            self._lru.move_to_end(key)


class SuffixProposer:
    name = "suffix"

    def __init__(self, capacity_tokens: int = 262_144, *, shared: bool = False) -> None:
        self._contexts = ContextIndexes(KEY_LENGTH)
        self.store = OutputStore(capacity_tokens, shared=shared)

    def propose(self, requests: Sequence[DraftContext], max_tokens: Sequence[int]) -> list[Draft]:
        drafts = []
        for req, limit in zip(requests, max_tokens, strict=True):
            own, context = self._contexts.sync(req)
            if limit <= 0:
                drafts.append(NO_DRAFT)
                continue
            sources = [own]
            earlier = self.store.index(req.params.tenant)
            if earlier is not None:
                sources.append(earlier)
            length, cands = deepest_matches(sources, context, limit=CANDIDATES, max_match=MAX_MATCH)
            if not cands:
                drafts.append(NO_DRAFT)
                continue
            found = walk(cands, limit, match=length, min_path_prob=MIN_PATH_PROB)
            for doc in {src.doc for src in found.sources if src.index is not own}:
                self.store.touch(req.params.tenant, doc)
            drafts.append(Draft(found.tokens, found.probs) if found.tokens else NO_DRAFT)
        return drafts

    def finish(self, request: DraftContext) -> None:
        self._contexts.drop(request)
        self.store.add(request.params.tenant, request.output_token_ids)

    @property
    def held_tokens(self) -> int:
        return self.store.held_tokens

    @property
    def capacity_tokens(self) -> int:
        return self.store.capacity_tokens
