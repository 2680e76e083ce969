"""astrai.retrieval: the index side of AstrAI's retrieval pipeline.

An analyzer and a BM25 inverted index (Lucene's variant), dense indexes (exact and HNSW),
hybrid fusion (RRF and convex), OpenAI-style static chunking and metadata filters, a durable
folder-backed `VectorStore`, and cache-aware passage ordering for RAG prompts. Vectors come
from the caller (the server's encoder); nothing here imports the scheduler or the server.
"""

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

__all__ = [
    "DEFAULT_CHUNK_OVERLAP_TOKENS",
    "DEFAULT_CHUNK_SIZE_TOKENS",
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
    "ExactIndex",
    "Filter",
    "FilterError",
    "FusedHit",
    "FusionMode",
    "HNSWIndex",
    "Metadata",
    "MetadataValue",
    "Metric",
    "OrderMode",
    "Passage",
    "PassagePopularity",
    "PromptPassage",
    "RankingOptions",
    "RetrievalError",
    "RetrievalInputError",
    "SearchHit",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreReadOnlyError",
    "StoreSettings",
    "StoreStats",
    "TokenSpans",
    "VectorStore",
    "chunk_text",
    "convex",
    "fuse",
    "normalise",
    "order_for_cache",
    "parse_filter",
    "passage_key",
    "porter_stem",
    "rrf",
    "word_spans",
]
