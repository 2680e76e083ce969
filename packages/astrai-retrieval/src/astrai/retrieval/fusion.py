"""Fusing a dense and a sparse ranking: reciprocal-rank fusion and convex (weighted) fusion.

`rrf` and `convex` are the plain formulas over any number of rankings; `fuse` is what a store
search runs: it takes the two candidate lists, applies `RankingOptions` and returns `FusedHit`s
whose score lies in [0, 1] for both hybrid modes, so one `score_threshold` means the same thing
whichever weights a request sends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import RetrievalInputError

FusionMode = Literal["hybrid_rrf", "hybrid_convex", "dense", "sparse"]
Normalisation = Literal["minmax", "max", "none"]
FUSION_MODES: tuple[str, ...] = ("hybrid_rrf", "hybrid_convex", "dense", "sparse")
NORMALISATIONS: tuple[str, ...] = ("minmax", "max", "none")

Ranking = Sequence[tuple[int, float]]  # (doc id, score), best first


@dataclass(frozen=True)
class RankingOptions:
    """How a search ranks (validated on construction; `RetrievalInputError.param` names the field).

    - `mode`: "hybrid_rrf" (OpenAI's `ranking_options.hybrid_search`), "hybrid_convex"
      (default), "dense" (embedding only) or "sparse" (BM25 only).
    - `dense_weight`, `sparse_weight`: >= 0, not both 0 (OpenAI's `embedding_weight` and
      `text_weight`); only their ratio matters. The defaults (convex, 2 : 1, min-max) were
      chosen on a known-item set (bench/retrieval/hybrid_bench.py; see the package README).
    - `rrf_k`: the RRF rank constant (60 as in Cormack et al.), > 0.
    - `normalisation`: how "hybrid_convex" scales each list before weighting: "minmax" (to
      [0, 1] over the list's candidates), "max" (divide by the best; for non-negative scores),
      "none" (raw scores; the fused score is then not bounded).
    - `score_threshold`: drop hits whose final score is below it. The final score is the
      fused one in [0, 1] for the hybrid modes, the similarity (cosine / inner product /
      negative squared L2) for "dense", and the raw BM25 score for "sparse".
    - `candidates`: how many hits each side contributes before fusion (None: max(4 * k, 40)).
    """

    mode: FusionMode = "hybrid_convex"
    dense_weight: float = 2.0
    sparse_weight: float = 1.0
    rrf_k: float = 60.0
    normalisation: Normalisation = "minmax"
    score_threshold: float = 0.0
    candidates: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise RetrievalInputError(f"ranking mode must be one of {', '.join(FUSION_MODES)}, got {self.mode!r}",
                                      "ranking_options.mode")
        for name in ("dense_weight", "sparse_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise RetrievalInputError(f"{name} must be a finite number >= 0, got {value!r}",
                                          f"ranking_options.{name}")
        if self.mode.startswith("hybrid") and self.dense_weight == 0 and self.sparse_weight == 0:
            raise RetrievalInputError("dense_weight and sparse_weight cannot both be 0", "ranking_options")
        if not isinstance(self.rrf_k, (int, float)) or not math.isfinite(self.rrf_k) or self.rrf_k <= 0:
            raise RetrievalInputError(f"rrf_k must be a finite number > 0, got {self.rrf_k!r}", "ranking_options.rrf_k")
        if self.normalisation not in NORMALISATIONS:
            raise RetrievalInputError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {self.normalisation!r}",
                "ranking_options.normalisation")
        if (isinstance(self.score_threshold, bool) or not isinstance(self.score_threshold, (int, float))
                or math.isnan(self.score_threshold)):
            raise RetrievalInputError(f"score_threshold must be a number, got {self.score_threshold!r}",
                                      "ranking_options.score_threshold")
        if self.candidates is not None and (not isinstance(self.candidates, int) or self.candidates < 1):
            raise RetrievalInputError(f"candidates must be a positive integer, got {self.candidates!r}",
                                      "ranking_options.candidates")

    @property
    def uses_dense(self) -> bool:
        return self.mode != "sparse" and (self.mode == "dense" or self.dense_weight > 0)

    @property
    def uses_sparse(self) -> bool:
        return self.mode != "dense" and (self.mode == "sparse" or self.sparse_weight > 0)

    def candidates_for(self, k: int) -> int:
        return self.candidates if self.candidates is not None else max(4 * k, 40)


@dataclass(frozen=True)
class FusedHit:
    """One fused result: ranks are 1-based positions in each candidate list (None: absent)."""

    id: int
    score: float
    dense_rank: int | None
    sparse_rank: int | None
    dense_score: float | None
    sparse_score: float | None


def _check_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} rankings")
    return [float(w) for w in weights]


def rrf(rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None, *,
        k: float = 60.0) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1; a list
    that lacks d adds nothing. Best first; ties broken by the smaller id."""
    ws = _check_weights(len(rankings), weights)
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, ws, strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def normalise(scores: Sequence[float], how: Normalisation = "minmax") -> list[float]:
    """Scale one list's scores: "minmax" to [0, 1] (all equal -> all 1), "max" by the best
    (a non-positive best -> all 1), "none" unchanged."""
    if how == "none" or not scores:
        return list(scores)
    hi = max(scores)
    if how == "max":
        return [s / hi for s in scores] if hi > 0 else [1.0] * len(scores)
    lo = min(scores)
    span = hi - lo
    return [(s - lo) / span for s in scores] if span > 0 else [1.0] * len(scores)


def convex(score_lists: Sequence[Ranking], weights: Sequence[float] | None = None, *,
           normalisation: Normalisation = "minmax") -> list[tuple[int, float]]:
    """Convex fusion: score(d) = sum_i w_i * norm_i(d) / sum_i w_i, each list normalised over its
    own candidates; a list that lacks d contributes 0. Best first; ties by the smaller id."""
    ws = _check_weights(len(score_lists), weights)
    total = sum(ws)
    if total <= 0:
        raise ValueError("convex fusion needs a positive weight")
    scores: dict[int, float] = {}
    for ranking, w in zip(score_lists, ws, strict=True):
        normed = normalise([s for _, s in ranking], normalisation)
        for (doc, _), s in zip(ranking, normed, strict=True):
            scores[doc] = scores.get(doc, 0.0) + w * s / total
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fuse(dense: Ranking, sparse: Ranking, options: RankingOptions, k: int) -> list[FusedHit]:
    """The top `k` of the two candidate lists under `options`, then `score_threshold` applied.

    "hybrid_rrf" scores are RRF divided by its maximum (a document first in both lists scores
    1.0); "hybrid_convex" scores are convex fusion (in [0, 1] unless normalisation is "none");
    "dense" / "sparse" return that list's own scores."""
    dense_pos = {doc: (rank, score) for rank, (doc, score) in enumerate(dense, start=1)}
    sparse_pos = {doc: (rank, score) for rank, (doc, score) in enumerate(sparse, start=1)}
    if options.mode == "dense":
        fused = [(doc, score) for doc, score in dense]
    elif options.mode == "sparse":
        fused = [(doc, score) for doc, score in sparse]
    elif options.mode == "hybrid_rrf":
        weights = (options.dense_weight, options.sparse_weight)
        top = sum(weights) / (options.rrf_k + 1)
        raw = rrf([[d for d, _ in dense], [d for d, _ in sparse]], weights, k=options.rrf_k)
        fused = [(doc, score / top) for doc, score in raw]
    else:
        fused = convex([dense, sparse], (options.dense_weight, options.sparse_weight),
                       normalisation=options.normalisation)
    hits = []
    for doc, score in fused[:k]:
        if score < options.score_threshold:
            continue
        d = dense_pos.get(doc)
        s = sparse_pos.get(doc)
        hits.append(FusedHit(doc, float(score), d[0] if d else None, s[0] if s else None,
                             float(d[1]) if d else None, float(s[1]) if s else None))
    return hits
