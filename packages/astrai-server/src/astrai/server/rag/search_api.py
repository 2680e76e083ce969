"""`POST /v1/vector_stores/{id}/search`.

Extensions to OpenAI's request (documented in the server README): `ranking_options.mode`
("hybrid" default, "dense", "sparse"), `ranking_options.fusion` ("rrf", "convex"),
`ranking_options.rrf_k`. `hybrid_search.embedding_weight` / `text_weight` weigh either fusion
(without `fusion`, they are OpenAI's RRF weights). A hybrid request that names neither fusion nor
weights gets astrai.retrieval's default ranking (`RankingOptions()`).
"""

from __future__ import annotations

from typing import Any, Literal

from astrai.retrieval import RankingOptions, RetrievalInputError, parse_filter
from astrai.server.body import read_model
from astrai.server.errors import bad_request
from astrai.server.openai_models import StrictModel
from astrai.server.rag.common import rag
from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_RESULTS = 50


class HybridSearch(StrictModel):
    embedding_weight: float
    text_weight: float


class SearchRanking(StrictModel):
    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: float | None = Field(None, ge=0.0)
    hybrid_search: HybridSearch | None = None
    mode: Literal["hybrid", "dense", "sparse"] | None = None  # our extension
    fusion: Literal["rrf", "convex"] | None = None  # our extension
    rrf_k: float | None = Field(None, gt=0)  # our extension

    def options(self) -> RankingOptions:
        """The astrai.retrieval ranking this asks for; a 400 naming the field if it is invalid."""
        mode = self.mode or "hybrid"
        weights = self.hybrid_search
        if weights is not None and mode != "hybrid":
            raise bad_request(f"ranking_options.hybrid_search: only for mode 'hybrid', not {mode!r}",
                              "ranking_options.hybrid_search")
        if self.fusion is not None and mode != "hybrid":
            raise bad_request(f"ranking_options.fusion: only for mode 'hybrid', not {mode!r}", "ranking_options.fusion")
        fields: dict[str, Any] = {"score_threshold": self.score_threshold or 0.0}
        if mode != "hybrid":
            fields["mode"] = mode
        elif self.fusion == "rrf" or (self.fusion is None and (weights is not None or self.rrf_k is not None)):
            # OpenAI's hybrid_search weights are reciprocal-rank-fusion weights (1:1 unless given)
            fields.update(mode="hybrid_rrf", dense_weight=1.0, sparse_weight=1.0)
        elif self.fusion == "convex":
            fields["mode"] = "hybrid_convex"
        # else: astrai.retrieval's default ranking (its fusion and weights tuned on a known-item set)
        if weights is not None:
            fields["dense_weight"], fields["sparse_weight"] = weights.embedding_weight, weights.text_weight
        if self.rrf_k is not None:
            fields["rrf_k"] = self.rrf_k
        try:
            return RankingOptions(**fields)
        except RetrievalInputError as exc:
            param = (exc.param or "ranking_options").replace("dense_weight", "hybrid_search.embedding_weight")
            param = param.replace("sparse_weight", "hybrid_search.text_weight")
            message = str(exc).replace("dense_weight", "embedding_weight").replace("sparse_weight", "text_weight")
            raise bad_request(f"{param}: {message}", param) from None


class SearchRequest(StrictModel):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=MAX_RESULTS)
    filters: dict[str, Any] | None = None
    ranking_options: SearchRanking | None = None
    rewrite_query: bool | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("must be a non-empty string (or a non-empty list of them)")
        return value

    @field_validator("rewrite_query")
    @classmethod
    def _no_rewrite(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("this server does not rewrite queries; send false or omit it")
        return value

    def text(self) -> str:
        return self.query if isinstance(self.query, str) else "\n".join(self.query)


def check_filters(filters: dict[str, Any] | None, param: str = "filters") -> dict[str, Any] | None:
    try:
        parse_filter(filters, param)
    except RetrievalInputError as exc:
        raise bad_request(f"{exc.param}: {exc}", exc.param) from None
    return filters


async def search_store(request: Request) -> Response:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    req = await read_model(request, SearchRequest)
    options = (req.ranking_options or SearchRanking()).options()
    filters = check_filters(req.filters)
    hits = await service.search(store, req.text(), req.max_num_results, options, filters)
    data = [service.result_body(hit) for hit in hits]
    return JSONResponse({"object": "vector_store.search_results.page", "search_query": [req.text()], "data": data,
                         "has_more": False, "next_page": None})
