"""RAG through the openai client: the Responses `file_search` tool and chat's `file_search` field, the
passages' KV pages reused from the prefix cache, cache-aware vs relevance order, and refusals."""

from __future__ import annotations

import io

import openai
import pytest

from .conftest import MODEL
from .rag_docs import DOCS

CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


@pytest.fixture(scope="module")
def rag_store(rclient):
    vs = rclient.vector_stores.create(name="rag", chunking_strategy=CHUNKING)
    for name, text in DOCS.items():
        f = rclient.files.create(file=(name, io.BytesIO(text.encode())), purpose="assistants")
        assert rclient.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=f.id).status == "completed"
    return vs.id


def tool(store_id: str, **extra) -> dict:
    return {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2, **extra}


def test_responses_file_search_returns_the_call_and_an_answer(rclient, rag_store):
    response = rclient.responses.create(model=MODEL, input="Who tended the lamp of the Harbor Point lighthouse?",
                                        tools=[tool(rag_store)], include=["file_search_call.results"],
                                        max_output_tokens=8, temperature=0)
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == ["Who tended the lamp of the Harbor Point lighthouse?"]
    assert len(call.results) == 2 and call.results[0].filename == "lighthouse.txt"
    assert "Ellison" in " ".join(r.text for r in call.results)
    assert message.type == "message" and message.content[0].text
    assert response.usage.input_tokens > 150  # the passages are in the prompt
    assert response.tools[0].type == "file_search"
    without = rclient.responses.create(model=MODEL, input="Who tended the lamp?", tools=[tool(rag_store)],
                                       max_output_tokens=2)
    assert without.output[0].results is None  # as OpenAI: results only when included


def test_streamed_responses_carry_the_file_search_events(rclient, rag_store):
    events = list(rclient.responses.create(model=MODEL, input="How long should the loaf bake uncovered?",
                                           tools=[tool(rag_store)], max_output_tokens=4, stream=True))
    kinds = [e.type for e in events]
    assert kinds.index("response.file_search_call.completed") < kinds.index("response.output_text.delta")
    assert kinds[-1] == "response.incomplete"  # 4 tokens: cut short, as asked
    assert [item.type for item in events[-1].response.output] == ["file_search_call", "message"]


def test_chat_file_search_via_extra_body_and_cached_tokens(rclient, rag_store):
    question = [{"role": "user", "content": "How many floats does an AVX-512 register hold?"}]
    body = {"file_search": {"vector_store_ids": [rag_store], "max_num_results": 3}}
    first = rclient.chat.completions.create(model=MODEL, messages=question, max_tokens=4, temperature=0,
                                            extra_body=body)
    found = first.model_extra["file_search"]
    assert found["queries"] == [question[0]["content"]]
    assert any("sixteen" in r["text"] for r in found["results"])
    second = rclient.chat.completions.create(model=MODEL, messages=question, max_tokens=4, temperature=0,
                                             extra_body=body)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens > 300
    assert cached >= second.usage.prompt_tokens - 32, (cached, second.usage.prompt_tokens)  # all but the last page


def test_metrics_count_rag_prompts_and_passages(rhttp, rclient, rag_store):
    def sample(name: str) -> float:
        text = rhttp.get("/metrics").text
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    before = (sample("astrai:rag_requests_total"), sample("astrai:rag_cached_prompt_tokens_total"))
    question = [{"role": "user", "content": "Which schooner ran aground on the ledge?"}]
    for _ in range(2):
        rclient.chat.completions.create(model=MODEL, messages=question, max_tokens=1,
                                        extra_body={"file_search": {"vector_store_ids": [rag_store]}})
    assert sample("astrai:rag_requests_total") == before[0] + 2
    assert sample("astrai:rag_cached_prompt_tokens_total") > before[1] + 100
    assert sample("astrai:vector_store_passages") >= 6


def test_streamed_chat_carries_the_file_search_results_once(rclient, rag_store):
    stream = rclient.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Which schooner ran aground?"}], max_tokens=3, stream=True,
        extra_body={"file_search": {"vector_store_ids": [rag_store], "max_num_results": 1}})
    chunks = list(stream)
    found = [c.model_extra["file_search"] for c in chunks if c.model_extra.get("file_search")]
    assert len(found) == 1 and found[0]["results"][0]["filename"] == "lighthouse.txt"


def _cached_after_reordering(rclient, store_id: str, order: str) -> int:
    """Ask a question whose passages are {A, B}, then another that ranks the same two the other way round;
    the cached tokens of the second request."""
    def ask(question: str, system: str):
        return rclient.chat.completions.create(
            model=MODEL, max_tokens=1, temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            extra_body={"file_search": {"vector_store_ids": [store_id], "max_num_results": 2,
                                        "passage_order": order}})
    first = ask("Who was the keeper of the lighthouse on the granite ledge?", f"Order test {order}.")
    second = ask("What should the sourdough starter be fed every day?", f"Order test {order}.")
    assert {r["filename"] for r in first.model_extra["file_search"]["results"]} == \
        {r["filename"] for r in second.model_extra["file_search"]["results"]}
    return second.usage.prompt_tokens_details.cached_tokens


def test_cache_aware_order_reuses_passages_that_relevance_order_does_not(rclient):
    two = rclient.vector_stores.create(name="two", chunking_strategy={"type": "static", "static": {
        "max_chunk_size_tokens": 400, "chunk_overlap_tokens": 0}})
    for name in ("lighthouse.txt", "sourdough.txt"):
        f = rclient.files.create(file=(name, io.BytesIO(DOCS[name][:700].encode())), purpose="assistants")
        rclient.vector_stores.files.create_and_poll(vector_store_id=two.id, file_id=f.id)
    relevance = _cached_after_reordering(rclient, two.id, "relevance")
    aware = _cached_after_reordering(rclient, two.id, "cache_aware")
    assert aware > relevance + 100, (aware, relevance)


@pytest.mark.parametrize(("tools", "param", "words"), [
    ([{"type": "file_search", "vector_store_ids": []}], "tools.0.vector_store_ids", "at least 1"),
    ([{"type": "file_search", "vector_store_ids": ["vs_missing"]}], "vector_store_id", "No such vector store"),
    ([{"type": "file_search", "vector_store_ids": ["STORE"], "max_num_results": 0}], "tools.0.max_num_results", "greater than"),
    ([{"type": "file_search", "vector_store_ids": ["STORE"], "passage_order": "random"}], "tools.0.passage_order", "relevance"),
    ([{"type": "file_search", "vector_store_ids": ["STORE"]}] * 2, "tools.1", "at most one file_search"),
    ([{"type": "web_search"}], "tools.0.type", "not supported"),
])
def test_bad_file_search_tools_get_openai_errors(rhttp, rag_store, tools, param, words):
    tools = [{**t, "vector_store_ids": [rag_store]} if t.get("vector_store_ids") == ["STORE"] else t for t in tools]
    response = rhttp.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": tools})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_file_search_needs_a_server_with_vector_stores(client):
    """The plain test server has no data folder: the field is refused with the reason."""
    with pytest.raises(openai.BadRequestError, match="data folder"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1,
                                       extra_body={"file_search": {"vector_store_ids": ["vs_x"]}})
