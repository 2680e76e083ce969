"""astrai-retrieval's wheel installs alone (numpy, astrai-cache and astrai-model are its
dependencies) and runs a durable hybrid store, its HNSW graph and cache-aware ordering, then the
sentence encoder it re-exports, checked against sentence-transformers."""

from __future__ import annotations

import torch

from .conftest import ENCODER_TEXTS


def test_retrieval_wheel_searches_a_durable_store_and_embeds_alone(make_venv, tiny_sentence_encoder):
    folder, reference = tiny_sentence_encoder
    venv = make_venv("astrai-retrieval")
    venv.check_consistent()
    installed = set(venv.versions())
    assert {"astrai-cache", "astrai-model", "numpy", "tokenizers", "safetensors"} <= installed
    assert installed & {"astrai-scheduler", "astrai-server", "transformers", "sentence-transformers"} == set()
    out = venv.job("retrieval", folder, *ENCODER_TEXTS)
    assert out["passages"] == 300 and out["dense_index"] == "hnsw"
    assert out["hybrid"] == ["p42", 1, 1] and out["dense"] == "p7" and out["sparse"] == "p99"
    assert out["filtered"] == [0, 1, 2, 3, 4]
    assert out["order"][:2] == ["p9", "p3"]
    # importing the package loads no torch; the sketch (astrai-cache) does, on first use
    assert out["torch_at_import"] is False and out["torch_after_popularity"] is True
    assert out["dimension"] == 32
    ours, theirs = torch.tensor(out["embeddings"]), torch.tensor(reference)
    assert float(torch.nn.functional.cosine_similarity(ours, theirs).min()) >= 0.9999
    assert torch.allclose(ours, theirs, atol=1e-5)
