"""`POST /v1/embeddings` through the official openai client against a real server on 127.0.0.1,
checked against the encoder itself, loaded as the server gets it: through astrai.retrieval (the rag
extra), which re-exports astrai-model's encoder (pinned to sentence-transformers in
tests/model/test_encoder.py). Without the extra the route is a 501: tests/server/test_rag_process.py."""

from __future__ import annotations

import base64
import concurrent.futures

import httpx
import numpy as np
import openai
import pytest
import torch
from astrai.retrieval import load_encoder

from .conftest import API_KEY, EMBEDDING_MODEL, MODEL

TEXTS = ["The radix tree shares KV pages between requests.", "Paged attention reads the cache in place.",
         "東京は日本の首都です。", "a", "Continuous batching admits new requests every step."]


@pytest.fixture(scope="module")
def reference():
    return load_encoder(EMBEDDING_MODEL)


def test_float_embeddings_match_the_encoder(rclient, reference):
    result = rclient.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, encoding_format="float")
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    got = torch.tensor([d.embedding for d in result.data])
    assert got.shape == (5, 384)
    assert torch.allclose(got, reference.encode(TEXTS), atol=1e-5)
    tokens = sum(len(ids) for ids in reference.tokenize(TEXTS))
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens
    assert result.model == EMBEDDING_MODEL


def test_base64_is_little_endian_float32_of_the_same_vectors(rclient, rhttp):
    floats = rclient.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[:2], encoding_format="float")
    raw = rhttp.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": TEXTS[:2],
                                             "encoding_format": "base64"}).json()
    for item, expected in zip(raw["data"], floats.data, strict=True):
        decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert decoded.tolist() == pytest.approx(expected.embedding, abs=0)
    # the client's default (it asks for base64 and decodes it itself) gives the same numbers
    default = rclient.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[:2])
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]


def test_token_id_inputs(rclient, reference):
    ids = reference.tokenize(TEXTS[:2])
    one = rclient.embeddings.create(model=EMBEDDING_MODEL, input=ids[0], encoding_format="float")
    many = rclient.embeddings.create(model=EMBEDDING_MODEL, input=ids, encoding_format="float")
    text = rclient.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[:2], encoding_format="float")
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[0])
    assert np.allclose(one.data[0].embedding, text.data[0].embedding, atol=1e-6)
    assert np.allclose([d.embedding for d in many.data], [d.embedding for d in text.data], atol=1e-6)


def test_concurrent_callers_share_forwards_and_get_their_own_vectors(retrieval_server, rclient, reference):
    registry = retrieval_server.app.state.service.metrics.registry

    def batches() -> float:
        return registry.get_sample_value("astrai:embedding_batches_total", {"model_name": EMBEDDING_MODEL})

    texts = [f"request {i}: " + " ".join(["word"] * (3 * i + 1)) for i in range(12)]
    batches_before = batches()
    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        futures = [pool.submit(rclient.embeddings.create, model=EMBEDDING_MODEL, input=t, encoding_format="float")
                   for t in texts]
        results = [f.result() for f in futures]
    shared = batches() - batches_before
    assert shared < len(texts), "12 concurrent callers never shared a forward"
    alone = reference.encode(texts)
    for result, expected in zip(results, alone, strict=True):
        assert np.allclose(result.data[0].embedding, expected.numpy(), atol=1e-5)


def test_models_lists_the_embedding_model(rclient):
    ids = [m.id for m in rclient.models.list().data]
    assert ids == [MODEL, EMBEDDING_MODEL]
    assert rclient.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL


@pytest.mark.parametrize(("body", "status", "param", "words"), [
    ({"model": MODEL, "input": "hi"}, 404, "model", "not an embedding model"),
    ({"model": "nope", "input": "hi"}, 404, "model", EMBEDDING_MODEL),
    ({"model": EMBEDDING_MODEL, "input": ""}, 400, "input", "must not be empty"),
    ({"model": EMBEDDING_MODEL, "input": []}, 400, "input", "not empty"),
    ({"model": EMBEDDING_MODEL, "input": ["ok", ""]}, 400, "input", "item 1 must not be empty"),
    ({"model": EMBEDDING_MODEL, "input": [[]]}, 400, "input", "item 0"),
    ({"model": EMBEDDING_MODEL, "input": [1, "a"]}, 400, "input", "item 0"),
    ({"model": EMBEDDING_MODEL, "input": {"text": "hi"}}, 400, "input", "must be a string"),
    ({"model": EMBEDDING_MODEL, "input": "word " * 300}, 400, "input", "maximum input length is 256 tokens"),
    ({"model": EMBEDDING_MODEL, "input": ["ok", "word " * 300]}, 400, "input.1", "256 tokens"),
    ({"model": EMBEDDING_MODEL, "input": [101, 40000, 102]}, 400, "input", "out of range [0, 30522)"),
    ({"model": EMBEDDING_MODEL, "input": [101, -1, 102]}, 400, "input", "out of range"),
    ({"model": EMBEDDING_MODEL, "input": "hi", "dimensions": 128}, 400, "dimensions", "not trained"),
    ({"model": EMBEDDING_MODEL, "input": "hi", "dimensions": 0}, 400, "dimensions", None),
    ({"model": EMBEDDING_MODEL, "input": "hi", "encoding_format": "int8"}, 400, "encoding_format", None),
    ({"model": EMBEDDING_MODEL, "input": ["x"] * 2049}, 400, "input", "at most 2048"),
    ({"input": "hi"}, 400, "model", None),
])
def test_bad_requests_get_openai_errors(rhttp, body, status, param, words):
    response = rhttp.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if words:
        assert words in error["message"]


def test_full_dimensions_are_accepted(rclient):
    result = rclient.embeddings.create(model=EMBEDDING_MODEL, input="hi", dimensions=384, encoding_format="float")
    assert len(result.data[0].embedding) == 384


def test_api_key_guards_embeddings(retrieval_server):
    anonymous = httpx.post(retrieval_server.v1 + "/embeddings", json={"model": EMBEDDING_MODEL, "input": "hi"})
    assert anonymous.status_code == 401
    wrong = openai.OpenAI(base_url=retrieval_server.v1, api_key=API_KEY + "x", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=EMBEDDING_MODEL, input="hi")
