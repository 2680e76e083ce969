"""The analyzer: text -> the terms BM25 indexes and queries.

Exactly, in this order:
1. split: the maximal runs matched by Python's `re` pattern `\\w+` on `str` (Unicode semantics:
   a word character is any character for which `str.isalnum()` is true, plus the underscore;
   so letters and digits of every script, combining marks excluded, e.g. "naïve" written with
   a combining diaeresis splits in two, the precomposed "ï" does not);
2. lowercase (optional, default on): `str.lower()`, Unicode's default case mapping;
3. drop stopwords (optional): after lowercasing, exact string match against the set;
4. stem (optional, default off): Porter's algorithm (`stemmer.porter_stem`) on lowercase ASCII
   words of three letters or more; other tokens pass unchanged.
No Unicode normalisation (NFC/NFKC) is applied: callers who need it normalise the text first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .stemmer import porter_stem

WORD_PATTERN = re.compile(r"\w+")

# Lucene's EnglishAnalyzer default stop set (ENGLISH_STOP_WORDS_SET).
ENGLISH_STOPWORDS: frozenset[str] = frozenset((
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with"
).split())


@dataclass(frozen=True)
class Analyzer:
    """Text -> terms (see the module docstring for the exact rules).

    `stopwords`: None (keep every token), "english" (`ENGLISH_STOPWORDS`), or any iterable of
    words (stored as a sorted tuple, so two analyzers with the same words compare equal).
    """

    lowercase: bool = True
    stem: bool = False
    stopwords: tuple[str, ...] | None = None
    _stopset: frozenset[str] = field(init=False, repr=False, compare=False)

    def __init__(self, lowercase: bool = True, stem: bool = False,
                 stopwords: str | Iterable[str] | None = None) -> None:
        if stopwords == "english":
            words: tuple[str, ...] | None = tuple(sorted(ENGLISH_STOPWORDS))
        elif isinstance(stopwords, str):
            raise ValueError(f"stopwords must be None, 'english' or a collection of words, got {stopwords!r}")
        else:
            words = None if stopwords is None else tuple(sorted(set(stopwords)))
        object.__setattr__(self, "lowercase", bool(lowercase))
        object.__setattr__(self, "stem", bool(stem))
        object.__setattr__(self, "stopwords", words)
        object.__setattr__(self, "_stopset", frozenset(words or ()))

    def tokens(self, text: str) -> list[str]:
        """The terms of `text`, in order, repeats kept."""
        terms = WORD_PATTERN.findall(text)
        if self.lowercase:
            terms = [t.lower() for t in terms]
        if self._stopset:
            terms = [t for t in terms if t not in self._stopset]
        if self.stem:
            terms = [porter_stem(t) for t in terms]
        return terms

    def to_dict(self) -> dict:
        return {"lowercase": self.lowercase, "stem": self.stem,
                "stopwords": list(self.stopwords) if self.stopwords is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> Analyzer:
        return cls(lowercase=data["lowercase"], stem=data["stem"], stopwords=data["stopwords"])
