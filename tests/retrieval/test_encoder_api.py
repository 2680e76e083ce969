"""The sentence encoder as astrai.retrieval's public API: astrai-model's own objects, imported on
first use (the indexes and stores never load torch), and a real MiniLM feeding a real store."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import astrai.model
import astrai.retrieval
import pytest
from astrai.retrieval import (
    DEFAULT_ENCODER,
    ModelLoadError,
    Passage,
    RankingOptions,
    StoreSettings,
    VectorStore,
    load_encoder,
    locate_encoder,
)
from astrai.retrieval import encoder as encoder_module

ENCODER_NAMES = ["DEFAULT_ENCODER", "EncoderInputError", "ModelLoadError", "SentenceEncoder", "bundled_encoder_path",
                 "load_encoder", "locate_encoder"]


def test_the_encoder_names_are_astrai_models_own_objects():
    assert sorted(encoder_module.__all__) == ENCODER_NAMES
    for name in ENCODER_NAMES:
        assert name in astrai.retrieval.__all__ and name in dir(astrai.retrieval)
        assert getattr(astrai.retrieval, name) is getattr(astrai.model, name), name
    with pytest.raises(AttributeError, match="has no attribute 'Transformer'"):
        astrai.retrieval.Transformer  # noqa: B018  (only the encoder is re-exported)


def test_importing_the_package_loads_no_torch_until_an_encoder_name_is_used(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import astrai.retrieval
        from astrai.retrieval import Passage, StoreSettings, VectorStore
        with VectorStore.create({str(tmp_path / "store")!r}, StoreSettings("e", 4)) as store:
            store.upsert([Passage("p0", "f", "some text", np.ones(4, np.float32), {{}})])
            assert store.search("text", np.ones(4, np.float32), k=1)[0].passage.id == "p0"
        before = sorted(m for m in ("torch", "astrai.model") if m in sys.modules)
        from astrai.retrieval import *  # noqa: F403  (every name in __all__ resolves)
        from astrai.retrieval import SentenceEncoder
        after = sorted(m for m in ("torch", "astrai.model") if m in sys.modules)
        print(before, after, SentenceEncoder.__module__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "[] ['astrai.model', 'torch'] astrai.model.encoder"


def test_a_missing_model_folder_is_a_model_load_error():
    with pytest.raises(ModelLoadError) as caught:
        locate_encoder("/nonexistent/encoder")
    assert caught.value.problem.startswith("not a built-in encoder")


def test_the_bundled_encoder_feeds_a_store_that_finds_the_paraphrase(tmp_path):
    """Real MiniLM vectors (through astrai.retrieval alone) rank the passage a paraphrase means first,
    dense-only, where the query shares no word with it."""
    encoder = load_encoder(DEFAULT_ENCODER)
    texts = ["The cat sat on the warm windowsill all afternoon.",
             "Interest rates rose again, and mortgages became more expensive.",
             "The striker scored twice in the second half of the final.",
             "Glaciers retreat as average temperatures climb each decade."]
    vectors = encoder.encode(texts).numpy()
    settings = StoreSettings(encoder.name, encoder.dimension)
    with VectorStore.create(tmp_path / "store", settings) as store:
        store.upsert([Passage(f"p{i}", "f", t, v, {}) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))])
        for query, expected in [("borrowing money for a house got pricier", "p1"),
                                ("a kitten dozing in the sunshine", "p0"),
                                ("ice sheets are melting because the world is heating up", "p3")]:
            hits = store.search(query, encoder.encode([query]).numpy()[0], k=4, options=RankingOptions(mode="dense"))
            assert hits[0].passage.id == expected, (query, [(h.passage.id, h.score) for h in hits])
