"""`GET /openapi.json` and `/docs`, served as vLLM serves them, and a schemathesis run against them.

The document is fetched from a real server on 127.0.0.1 (the bundled model, the bundled embedding
model, a vector-store data folder of its own), then schemathesis generates requests for every
operation it describes: each must be answered below 500, and the server must be healthy and the
KV pool whole afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings

from .conftest import (
    API_KEY,
    EMBEDDING_MODEL,
    MODEL,
    RunningServer,
    retrieval_config,
    serve,
    wait_healthy,
    wait_idle,
)

FUZZ_EXAMPLES = 250  # requests generated over all operations (well under a minute on two cores)
MAX_NEW_TOKENS = 4  # generated output is capped: the fuzz is about the HTTP surface, not decoding speed
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# the field that bounds each generation route's output
OUTPUT_LIMIT = {"/v1/chat/completions": ("max_tokens", "max_completion_tokens"), "/v1/completions": ("max_tokens",),
                "/v1/responses": ("max_output_tokens",)}


@pytest.fixture
def fuzzed_server(rag_engine: Any, tmp_path: Any) -> Iterator[RunningServer]:
    """Everything on (embeddings, files, vector stores), with a data folder no other test reads."""
    from astrai.server import create_app

    with serve(create_app(retrieval_config(tmp_path), engine=rag_engine)) as running:
        wait_healthy(running.base_url)
        assert running.app.state.embedder.wait(120)
        assert running.app.state.rag.wait(120), running.app.state.rag.check_ready()
        yield running


def documented_routes(app: Any) -> set[tuple[str, str]]:
    return {(method, route.path_format) for route in app.routes if isinstance(route, APIRoute)
            and route.include_in_schema for method in route.methods}


def test_the_document_describes_every_route_with_its_models(fuzzed_server):
    document = httpx.get(fuzzed_server.base_url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert listed == documented_routes(fuzzed_server.app)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/tokenize",
                 "/v1/vector_stores", "/v1/vector_stores/{vector_store_id}/search"):
        post = document["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["properties"], path
        assert post["responses"]["200"]["content"]["application/json"]["schema"], path
        assert post["responses"]["400"]["content"]["application/json"]["schema"], path
    upload = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file", "purpose"]
    assert "ChatMessage" in document["components"]["schemas"]
    docs = httpx.get(fuzzed_server.base_url + "/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def aim(case: Any) -> None:
    """Name the served model (so most requests reach the engine rather than a 404) and keep a
    generation's output short (any value the schema allows stays allowed)."""
    if not isinstance(case.body, dict):
        return
    if isinstance(case.body.get("model"), str):
        case.body["model"] = EMBEDDING_MODEL if case.path == "/v1/embeddings" else MODEL
    fields = OUTPUT_LIMIT.get(case.path)
    if fields is None:
        return
    given = [f for f in fields if case.body.get(f) is not None]
    for field in given or fields[:1]:
        value = case.body.get(field)
        case.body[field] = MAX_NEW_TOKENS if not isinstance(value, int) else min(value, MAX_NEW_TOKENS)


def test_schemathesis_requests_all_get_an_answer_below_500(fuzzed_server, rag_engine):
    schema = schemathesis.openapi.from_url(fuzzed_server.base_url + "/openapi.json")
    answered: list[tuple[str, str, int]] = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy())
    def each(case: Any) -> None:
        aim(case)
        response = case.call(base_url=fuzzed_server.base_url, headers=AUTH, timeout=120)
        answered.append((case.method, case.path, response.status_code))
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])

    each()
    operations = {(method, path) for method, path, _ in answered}
    assert len(operations) >= 20, operations  # the run reached most of the API, not one route
    generated = {path for _, path, status in answered if status == 200 and path in OUTPUT_LIMIT}
    assert generated, answered  # and some requests got as far as the engine
    assert httpx.get(fuzzed_server.base_url + "/health").status_code == 200
    stats = wait_idle(rag_engine)
    assert stats["num_free_pages"] + stats["num_cached_pages"] == stats["num_pages"]
