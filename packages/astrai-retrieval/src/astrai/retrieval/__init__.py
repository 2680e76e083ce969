"""astrai.retrieval: the index side of AstrAI's retrieval pipeline.

An analyzer and a BM25 inverted index (Lucene's variant), dense indexes (exact and HNSW),
hybrid fusion (RRF and convex), OpenAI-style static chunking and metadata filters, a durable
folder-backed `VectorStore`, and cache-aware passage ordering for RAG prompts; and the sentence
encoder that makes the vectors (astrai-model's `SentenceEncoder`, re-exported so the server
reaches it through retrieval). Nothing here imports the scheduler or the server.

The encoder names are imported on first use, not with the package: they come from astrai.model,
which imports torch (seconds), and the indexes, the store and their crash-test children never
need it. Type checkers see them through the `TYPE_CHECKING` import below.
"""

from typing import TYPE_CHECKING

from .analyzer import ENGLISH_STOPWORDS, WORD_PATTERN, Analyzer
from .bm25 import BM25Index
from .chunking import (
    DEFAULT_CHUNK_OVERLAP_TOKENS,
    DEFAULT_CHUNK_SIZE_TOKENS,
    MAX_CHUNK_SIZE_TOKENS,
    MIN_CHUNK_SIZE_TOKENS,
    Chunk,
    ChunkingSettings,
    TokenSpans,
    chunk_text,
    word_spans,
)
from .dense import METRICS, DenseIndex, Metric
from .errors import (
    FilterError,
    RetrievalError,
    RetrievalInputError,
    StoreClosedError,
    StoreCorruptError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from .exact import ExactIndex
from .filters import ComparisonFilter, CompoundFilter, Filter, Metadata, MetadataValue, parse_filter
from .fusion import FUSION_MODES, FusedHit, FusionMode, RankingOptions, convex, fuse, normalise, rrf
from .hnsw import HNSWIndex
from .ordering import ORDER_MODES, CachedPrefixLen, OrderMode, PromptPassage, order_for_cache
from .popularity import PassagePopularity, passage_key
from .stemmer import porter_stem
from .store import Passage, SearchHit, StoreSettings, StoreStats, VectorStore

if TYPE_CHECKING:
    from .encoder import (
        DEFAULT_ENCODER,
        EncoderInputError,
        ModelLoadError,
        SentenceEncoder,
        bundled_encoder_path,
        load_encoder,
        locate_encoder,
    )

# Resolved by `__getattr__` from `.encoder` on first access (then bound in this module).
_ENCODER_NAMES = frozenset({
    "DEFAULT_ENCODER",
    "EncoderInputError",
    "ModelLoadError",
    "SentenceEncoder",
    "bundled_encoder_path",
    "load_encoder",
    "locate_encoder",
})


def __getattr__(name: str) -> object:
    """PEP 562: the encoder names, imported from astrai.model the first time one is used."""
    if name not in _ENCODER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import encoder

    value = vars(encoder)[name]
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ENCODER_NAMES})


__all__ = [
    "DEFAULT_CHUNK_OVERLAP_TOKENS",
    "DEFAULT_CHUNK_SIZE_TOKENS",
    "DEFAULT_ENCODER",
    "ENGLISH_STOPWORDS",
    "FUSION_MODES",
    "MAX_CHUNK_SIZE_TOKENS",
    "METRICS",
    "MIN_CHUNK_SIZE_TOKENS",
    "ORDER_MODES",
    "WORD_PATTERN",
    "Analyzer",
    "BM25Index",
    "CachedPrefixLen",
    "Chunk",
    "ChunkingSettings",
    "ComparisonFilter",
    "CompoundFilter",
    "DenseIndex",
    "EncoderInputError",
    "ExactIndex",
    "Filter",
    "FilterError",
    "FusedHit",
    "FusionMode",
    "HNSWIndex",
    "Metadata",
    "MetadataValue",
    "Metric",
    "ModelLoadError",
    "OrderMode",
    "Passage",
    "PassagePopularity",
    "PromptPassage",
    "RankingOptions",
    "RetrievalError",
    "RetrievalInputError",
    "SearchHit",
    "SentenceEncoder",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreReadOnlyError",
    "StoreSettings",
    "StoreStats",
    "TokenSpans",
    "VectorStore",
    "bundled_encoder_path",
    "chunk_text",
    "convex",
    "fuse",
    "load_encoder",
    "locate_encoder",
    "normalise",
    "order_for_cache",
    "parse_filter",
    "passage_key",
    "porter_stem",
    "rrf",
    "word_spans",
]
