"""Speculative decoding without a draft model: proposers, the per-step policy, verification rows.

`make_proposer(method, ...)` builds the proposer an engine setting names; `Speculator` decides
which decoding requests get drafts each step; `verify.draft_rows` turns a verification chunk
into sampling rows. Anything implementing `Proposer` can be plugged in without touching
verification.
"""

from __future__ import annotations

from .ngram import PromptLookupProposer
from .proposer import NO_DRAFT, Draft, DraftContext, Proposer
from .speculator import SpeculationCounters, Speculator
from .suffix import SuffixProposer

METHODS = ("off", "ngram", "suffix")


def make_proposer(method: str, *, suffix_tokens: int, shared_suffix: bool) -> Proposer | None:
    """The proposer for an engine's `speculation` setting (None for "off")."""
    if method == "off":
        return None
    if method == "ngram":
        return PromptLookupProposer()
    if method == "suffix":
        return SuffixProposer(suffix_tokens, shared=shared_suffix)
    raise ValueError(f"speculation must be one of {', '.join(METHODS)}, got {method!r}")


__all__ = [
    "METHODS",
    "NO_DRAFT",
    "Draft",
    "DraftContext",
    "PromptLookupProposer",
    "Proposer",
    "SpeculationCounters",
    "Speculator",
    "SuffixProposer",
    "make_proposer",
]
