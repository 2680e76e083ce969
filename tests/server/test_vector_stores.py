"""Files and vector stores through the official openai client against a real server on 127.0.0.1:
the whole lifecycle, hybrid / dense / sparse search, filters, thresholds, hostile inputs, restarts."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest
from astrai.server import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import API_KEY, EMBEDDING_MODEL, retrieval_config, serve, wait_healthy
from .rag_docs import DOCS, QUESTIONS

CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}


def upload(client: openai.OpenAI, name: str, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")


@pytest.fixture(scope="module")
def store(rclient):
    """A store holding the three documents, each with a `topic` attribute."""
    vs = rclient.vector_stores.create(name="docs", chunking_strategy=CHUNKING, metadata={"suite": "vector-stores"})
    files = {}
    for name, text in DOCS.items():
        f = upload(rclient, name, text)
        attached = rclient.vector_stores.files.create_and_poll(
            vector_store_id=vs.id, file_id=f.id, attributes={"topic": name.split(".")[0], "year": 2024})
        assert attached.status == "completed", attached.last_error
        files[name] = f
    return vs, files


def search(client, vs_id: str, query: str, **kwargs) -> list:
    return list(client.vector_stores.search(vector_store_id=vs_id, query=query, **kwargs))


def test_files_lifecycle(rclient):
    f = upload(rclient, "notes.txt", "Pages are shared copy-on-write.")
    assert (f.object, f.purpose, f.bytes, f.filename, f.status) == ("file", "assistants", 31, "notes.txt", "processed")
    assert rclient.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in rclient.files.list()]
    assert rclient.files.content(f.id).content == b"Pages are shared copy-on-write."
    assert rclient.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        rclient.files.retrieve(f.id)


def test_store_lifecycle_and_counts(rclient, store):
    vs, files = store
    got = rclient.vector_stores.retrieve(vs.id)
    assert (got.name, got.status, got.file_counts.completed, got.file_counts.total) == ("docs", "completed", 3, 3)
    assert got.metadata == {"suite": "vector-stores"} and got.usage_bytes > 0
    assert vs.id in [s.id for s in rclient.vector_stores.list()]
    listed = list(rclient.vector_stores.files.list(vector_store_id=vs.id))
    assert {f.id for f in listed} == {f.id for f in files.values()}
    one = rclient.vector_stores.files.retrieve(vector_store_id=vs.id, file_id=files["kernels.txt"].id)
    assert one.attributes == {"topic": "kernels", "year": 2024}
    assert one.chunking_strategy.static.max_chunk_size_tokens == 100


@pytest.mark.parametrize(("question", "filename", "word"), QUESTIONS)
def test_hybrid_search_finds_the_answer_first(rclient, store, question, filename, word):
    vs, _ = store
    hits = search(rclient, vs.id, question, max_num_results=3)
    assert hits[0].filename == filename
    assert any(word in hit.content[0].text for hit in hits)
    assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_dense_sparse_and_weighted_modes(rclient, store):
    vs, _ = store
    question = "Who tended the lamp of the Harbor Point lighthouse?"
    for options in ({"mode": "dense"}, {"mode": "sparse"}, {"fusion": "convex"},
                    {"hybrid_search": {"embedding_weight": 1.0, "text_weight": 0.0}},
                    {"hybrid_search": {"embedding_weight": 0.2, "text_weight": 3.0}, "rrf_k": 10}):
        hits = search(rclient, vs.id, question, max_num_results=2, ranking_options=options)
        assert hits[0].filename == "lighthouse.txt", options
    dense = search(rclient, vs.id, question, max_num_results=1, ranking_options={"mode": "dense"})
    sparse = search(rclient, vs.id, question, max_num_results=1, ranking_options={"mode": "sparse"})
    assert dense[0].score <= 1.0 < sparse[0].score  # cosine vs raw BM25


def test_filters_and_threshold(rclient, store):
    vs, _ = store
    question = "How many floats does an AVX-512 register hold?"
    only = search(rclient, vs.id, question, filters={"type": "eq", "key": "topic", "value": "sourdough"})
    assert only and {h.filename for h in only} == {"sourdough.txt"}
    none = search(rclient, vs.id, question, filters={"type": "gt", "key": "year", "value": 2030})
    assert none == []
    loose = search(rclient, vs.id, question, max_num_results=10)
    strict = search(rclient, vs.id, question, max_num_results=10, ranking_options={"score_threshold": 0.9})
    assert 0 < len(strict) < len(loose) and all(h.score >= 0.9 for h in strict)


def test_detaching_and_deleting_remove_passages(rclient):
    vs = rclient.vector_stores.create(name="temp", chunking_strategy=CHUNKING)
    a = upload(rclient, "a.txt", DOCS["sourdough.txt"])
    b = upload(rclient, "b.txt", DOCS["kernels.txt"])
    for f in (a, b):
        rclient.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=f.id)
    assert {h.file_id for h in search(rclient, vs.id, "sourdough starter flour", max_num_results=10)} == {a.id, b.id}
    assert rclient.vector_stores.files.delete(vector_store_id=vs.id, file_id=a.id).deleted
    assert {h.file_id for h in search(rclient, vs.id, "sourdough starter flour", max_num_results=10)} == {b.id}
    rclient.files.delete(b.id)  # a deleted file leaves every store
    assert search(rclient, vs.id, "vector registers", max_num_results=10) == []
    assert rclient.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        rclient.vector_stores.retrieve(vs.id)


def test_store_created_with_file_ids_is_searchable_at_once(rclient):
    f = upload(rclient, "kernels.txt", DOCS["kernels.txt"])
    vs = rclient.vector_stores.create(name="at-once", file_ids=[f.id])
    assert vs.file_counts.completed == 1 and vs.status == "completed"
    hits = search(rclient, vs.id, "fused multiply-add rounding")
    assert hits and hits[0].file_id == f.id
    rclient.vector_stores.delete(vs.id)
    blank = upload(rclient, "blank.txt", "   \n\n   ")  # text, but nothing to search
    vs = rclient.vector_stores.create(name="partly", file_ids=[f.id, blank.id])
    assert (vs.file_counts.completed, vs.file_counts.failed) == (1, 1)
    failed = rclient.vector_stores.files.retrieve(vector_store_id=vs.id, file_id=blank.id)
    assert failed.status == "failed" and failed.last_error.code == "invalid_file"
    rclient.vector_stores.delete(vs.id)


def test_stores_and_files_survive_a_restart(retrieval_server, rag_engine, rag_data_dir, rclient, store):
    """A second app on the same data folder (the first closed) finds the same stores, files and passages."""
    vs, files = store
    before = [(h.file_id, h.content[0].text) for h in search(rclient, vs.id, "Fresnel lens kerosene")]
    retrieval_server.app.state.rag.close()  # release the writer locks, as a stopping server does
    try:
        with serve(create_app(retrieval_config(rag_data_dir), engine=rag_engine)) as second:
            wait_healthy(second.base_url)
            assert second.app.state.rag.wait(120)
            client = openai.OpenAI(base_url=second.v1, api_key=API_KEY, max_retries=0)
            assert client.vector_stores.retrieve(vs.id).file_counts.completed == 3
            assert {f.id for f in client.files.list()} >= {f.id for f in files.values()}
            after = [(h.file_id, h.content[0].text) for h in search(client, vs.id, "Fresnel lens kerosene")]
            assert after == before
            second.app.state.rag.close()
    finally:
        retrieval_server.app.state.rag.stores.open_all()  # the module's server goes on with its stores


# --- hostile input -------------------------------------------------------------------------------------


def test_uploads_are_checked(rhttp):
    def post(name: str, data: bytes, purpose: str | None = "assistants") -> httpx.Response:
        fields = {"purpose": purpose} if purpose is not None else {}
        return rhttp.post("/v1/files", files={"file": (name, data)}, data=fields)

    cases = [
        (post("bin.dat", b"\x89PNG\r\n\x1a\n\x00\x00"), 400, "file", "NUL bytes"),
        (post("latin1.txt", "café".encode("latin-1")), 400, "file", "not valid UTF-8"),
        (post("empty.txt", b""), 400, "file", "empty"),
        (post("big.txt", b"a" * (64 * 1024 + 1)), 413, "file", "65536 bytes"),
        (post("x.txt", b"hello", purpose="fine-tune"), 400, "purpose", "not supported"),
        (post("x.txt", b"hello", purpose=None), 400, "purpose", "missing"),
        (rhttp.post("/v1/files", data={"purpose": "assistants"}), 400, "file", "missing"),
    ]
    for response, status, param, words in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], error
    huge = rhttp.post("/v1/files", content=b"x" * (200 * 1024), headers={"content-type": "multipart/form-data; b=x"})
    assert huge.status_code == 413


@pytest.fixture(scope="module")
def small_store(rclient):
    f = upload(rclient, "lighthouse.txt", DOCS["lighthouse.txt"])
    vs = rclient.vector_stores.create(name="small", file_ids=[f.id])
    return vs.id, f.id


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), [
    ("/search", {"query": ""}, 400, "query", "non-empty"),
    ("/search", {"query": "   "}, 400, "query", "non-empty"),
    ("/search", {"query": []}, 400, "query", "non-empty"),
    ("/search", {"query": "lamp", "max_num_results": 0}, 400, "max_num_results", None),
    ("/search", {"query": "lamp", "max_num_results": 51}, 400, "max_num_results", None),
    ("/search", {"query": "lamp", "ranking_options": {"hybrid_search": {"embedding_weight": -1, "text_weight": 1}}},
     400, "ranking_options.hybrid_search.embedding_weight", ">= 0"),
    ("/search", {"query": "lamp", "ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 0}}},
     400, "ranking_options", "both be 0"),
    ("/search", {"query": "lamp", "ranking_options": {"mode": "dense", "fusion": "convex"}}, 400,
     "ranking_options.fusion", "only for mode 'hybrid'"),
    ("/search", {"query": "lamp", "ranking_options": {"mode": "bm42"}}, 400, "ranking_options.mode", None),
    ("/search", {"query": "lamp", "ranking_options": {"score_threshold": -0.5}}, 400,
     "ranking_options.score_threshold", None),
    ("/search", {"query": "lamp", "rewrite_query": True}, 400, "rewrite_query", "does not rewrite"),
    ("/search", {"query": "lamp", "filters": {"type": "near", "key": "a", "value": 1}}, 400, "filters.type", None),
    ("/search", {"query": "!!! ???", "ranking_options": {"mode": "sparse"}}, 400, "query", None),
    ("/search", {"query": "lamp", "unknown": 1}, 400, "unknown", "Unrecognized"),
    ("/files", {"file_id": "file-nope"}, 404, "file_id", "No such file"),
    ("/files", {"file_id": "FILE", "chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 300, "chunk_overlap_tokens": 10}}}, 400, "chunking_strategy", "chunks of"),
])
def test_bad_store_requests_get_openai_errors(rhttp, small_store, path, body, status, param, words):
    vs_id, file_id = small_store
    if body.get("file_id") == "FILE":
        body = {**body, "file_id": file_id}
    response = rhttp.post(f"/v1/vector_stores/{vs_id}{path}", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    if words:
        assert words in error["message"], error


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), [
    ("POST", "/v1/vector_stores/vs_nope/search", {"query": "lamp"}, 404, "vector_store_id"),
    ("GET", "/v1/vector_stores/vs_nope", None, 404, "vector_store_id"),
    ("DELETE", "/v1/vector_stores/vs_nope", None, 404, "vector_store_id"),
    ("GET", "/v1/files/file-nope", None, 404, "file_id"),
    ("DELETE", "/v1/files/../../etc", None, 404, None),
    ("POST", "/v1/vector_stores", {"file_ids": ["file-nope"]}, 404, "file_id"),
    ("POST", "/v1/vector_stores", {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}}, 400, "chunking_strategy.static.max_chunk_size_tokens"),
    ("POST", "/v1/vector_stores", {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}}, 400, "chunking_strategy.static.chunk_overlap_tokens"),
    ("POST", "/v1/vector_stores", {"chunking_strategy": {"type": "static"}}, 400, "chunking_strategy.static"),
    ("POST", "/v1/vector_stores", {"expires_after": {"anchor": "last_active_at", "days": 1}}, 400, "expires_after"),
    ("POST", "/v1/vector_stores", {"metadata": {"k": "v" * 600}}, 400, "metadata"),
    ("GET", "/v1/vector_stores?limit=0", None, 400, "limit"),
    ("GET", "/v1/vector_stores?order=sideways", None, 400, "order"),
    ("GET", "/v1/files?after=file-nope", None, 400, "after"),
])
def test_bad_ids_and_settings(rhttp, method, path, body, status, param):
    response = rhttp.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_api_key_guards_files_and_stores(retrieval_server):
    for method, path in (("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/vector_stores"),
                         ("POST", "/v1/vector_stores/vs_x/search")):
        assert httpx.request(method, retrieval_server.base_url + path).status_code == 401
    wrong = openai.OpenAI(base_url=retrieval_server.v1, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.vector_stores.list()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
SEARCH_FIELDS = ["query", "max_num_results", "filters", "ranking_options", "rewrite_query"]
EMBEDDING_FIELDS = ["input", "encoding_format", "dimensions", "user", "model"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["search", "embeddings", "create"]), value=JSON_VALUES, pick=st.integers(0, 10))
def test_fuzzed_retrieval_fields_never_5xx(rhttp, small_store, which, value, pick):
    vs_id, _ = small_store
    if which == "search":
        path, body, fields = f"/v1/vector_stores/{vs_id}/search", {"query": "lamp"}, SEARCH_FIELDS
    elif which == "embeddings":
        path, body, fields = "/v1/embeddings", {"model": EMBEDDING_MODEL, "input": "hi"}, EMBEDDING_FIELDS
    else:
        path, body, fields = "/v1/vector_stores", {"name": "fuzz"}, ["name", "metadata", "chunking_strategy",
                                                                     "file_ids", "expires_after"]
    body[fields[pick % len(fields)]] = value
    response = rhttp.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", error
    elif which == "create":
        rhttp.delete(f"/v1/vector_stores/{response.json()['id']}")


def test_file_batches_upload_and_poll(rclient):
    vs = rclient.vector_stores.create(name="batch", chunking_strategy=CHUNKING)
    files = [(name, io.BytesIO(text.encode())) for name, text in DOCS.items()]
    batch = rclient.vector_stores.file_batches.upload_and_poll(vector_store_id=vs.id, files=files)
    assert (batch.status, batch.file_counts.completed, batch.file_counts.total) == ("completed", 3, 3)
    assert rclient.vector_stores.file_batches.retrieve(vector_store_id=vs.id, batch_id=batch.id).id == batch.id
    listed = list(rclient.vector_stores.file_batches.list_files(vector_store_id=vs.id, batch_id=batch.id))
    assert len(listed) == 3 and {f.status for f in listed} == {"completed"}
    assert search(rclient, vs.id, "Fresnel lens", max_num_results=1)[0].filename == "lighthouse.txt"
    with pytest.raises(openai.NotFoundError):
        rclient.vector_stores.file_batches.retrieve(vector_store_id=vs.id, batch_id="vsfb_nope")
    rclient.vector_stores.delete(vs.id)
