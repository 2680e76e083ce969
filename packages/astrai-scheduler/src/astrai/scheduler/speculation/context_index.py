"""Each running request's own context (prompt + verified output) kept in a SuffixIndex.

The index catches up lazily: when a request is next asked for a proposal, the tokens it
gained since are appended. It is dropped when the request finishes.
"""

from __future__ import annotations

from .proposer import DraftContext
from .suffix_index import SuffixIndex


class ContextIndexes:
    def __init__(self, key_length: int) -> None:
        self.key_length = key_length
        self._by_request: dict[str, tuple[SuffixIndex, int]] = {}

    def sync(self, request: DraftContext) -> tuple[SuffixIndex, list[int]]:
        """The request's index, up to date, and its context (the index's own token list)."""
        entry = self._by_request.get(request.request_id)
        if entry is None:
            index = SuffixIndex(self.key_length)
            doc = index.add(request.prompt_token_ids)
            entry = self._by_request[request.request_id] = (index, doc)
        index, doc = entry
        seq = index.tokens(doc)
        have = len(seq) - len(request.prompt_token_ids)
        out = request.output_token_ids
        if have < len(out):
            index.extend(doc, out[have:])
        return index, seq

    def drop(self, request: DraftContext) -> None:
        self._by_request.pop(request.request_id, None)

    def __len__(self) -> int:
        return len(self._by_request)
