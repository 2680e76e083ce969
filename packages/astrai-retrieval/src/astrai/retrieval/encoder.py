"""The sentence encoder that turns passages and queries into vectors: astrai-model's, re-exported.

DESIGN.md draws the encoder under retrieval (server -> retrieval -> model), so callers reach it
as `astrai.retrieval.load_encoder` and never import astrai.model themselves. The package
`__init__` imports this module on first use of one of these names: astrai.model brings torch,
which index-only users (a store, BM25, HNSW, their benches and crash-test children) never load.
"""

from __future__ import annotations

from astrai.model import (
    DEFAULT_ENCODER,
    EncoderInputError,
    ModelLoadError,
    SentenceEncoder,
    bundled_encoder_path,
    load_encoder,
    locate_encoder,
)

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderInputError",
    "ModelLoadError",
    "SentenceEncoder",
    "bundled_encoder_path",
    "load_encoder",
    "locate_encoder",
]
