"""A durable hybrid (dense + BM25) passage store living in one folder (skeleton: API first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .analyzer import Analyzer
from .chunking import ChunkingSettings
from .dense import Metric
from .filters import Filter, MetadataValue
from .fusion import RankingOptions

DenseKind = Literal["auto", "exact", "hnsw"]


@dataclass(frozen=True)
class StoreSettings:
    """What a store folder is built with, recorded at create time.

    Identity fields (a mismatch on open is a `StoreMismatchError`): `embedder_id` (the model
    that made the vectors, e.g. "sentence-transformers/all-MiniLM-L6-v2"), `dimension`,
    `metric`, the chunking (`max_chunk_size_tokens`, `chunk_overlap_tokens`; OpenAI's static
    strategy, recorded so every file of a store is cut the same way) and `analyzer`.
    Tuning fields (the stored values win on open): `dense_index` ("auto": exact search up to
    `exact_max_passages` passages, then an HNSW graph), HNSW's `hnsw_m` / `hnsw_ef_construction` /
    `hnsw_ef_search`, BM25's `bm25_k1` / `bm25_b`, and `snapshot_wal_bytes` (a snapshot is taken
    once the write-ahead log grows past it).
    """

    embedder_id: str
    dimension: int
    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400
    metric: Metric = "cosine"
    analyzer: Analyzer = field(default_factory=Analyzer)
    dense_index: DenseKind = "auto"
    exact_max_passages: int = 20_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    snapshot_wal_bytes: int = 64 << 20

    IDENTITY = ("embedder_id", "dimension", "metric", "max_chunk_size_tokens", "chunk_overlap_tokens", "analyzer")

    @property
    def chunking(self) -> ChunkingSettings:
        return ChunkingSettings(self.max_chunk_size_tokens, self.chunk_overlap_tokens)

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping) -> StoreSettings:
        raise NotImplementedError


@dataclass(frozen=True)
class Passage:
    """One searchable passage: `id` unique in the store (e.g. f"{file_id}:{chunk.index}"),
    `file_id` the file it came from (what `delete_file` removes), `text` (what BM25 indexes
    and RAG shows), `vector` (float32 [dimension], from the store's embedder), `metadata`
    (string / number / boolean values; what filters test; OpenAI's file attributes)."""

    id: str
    file_id: str
    text: str
    vector: np.ndarray
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    """A result: the fused `score` (see `RankingOptions`), and the passage's 1-based rank and
    score in each candidate list it appeared in (None where it did not)."""

    passage: Passage
    score: float
    dense_rank: int | None
    sparse_rank: int | None
    dense_score: float | None
    sparse_score: float | None


@dataclass(frozen=True)
class StoreStats:
    passages: int
    files: int
    dense_index: Literal["exact", "hnsw"]
    native: bool            # the HNSW graph runs native code
    wal_bytes: int          # the current write-ahead log
    snapshot_bytes: int     # the latest snapshot file
    last_sequence: int      # the last acknowledged write
    snapshot_sequence: int  # the last write the snapshot holds


class VectorStore:
    """Passages with their vectors, searchable by dense, BM25 or hybrid ranking, durable in
    `folder`:

        settings.json     the StoreSettings (written once, atomically)
        snapshot.bin      every passage and the dense index at one log sequence number
        wal-<seq>.log     the write-ahead log since that snapshot

    A write returns only after its log record is fsynced AND applied to the in-memory
    indexes: acknowledged == durable and searchable. Records are length + CRC32 framed, so
    a torn tail left by a crash is detected and dropped on open. Snapshots are written to a
    temporary file, fsynced and renamed, so a crash never leaves a half-written one.

    Thread-safe: writers are serialised; searches run concurrently with each other and wait
    only while a write applies to the indexes. One writer process per folder (an OS file lock);
    any number of `read_only=True` followers, which see new writes on `refresh()`.
    """

    folder: Path
    settings: StoreSettings
    read_only: bool

    @classmethod
    def create(cls, folder: str | Path, settings: StoreSettings) -> VectorStore:
        """A new, empty store in `folder` (created; must not already hold a store)."""
        raise NotImplementedError

    @classmethod
    def open(cls, folder: str | Path, expected: StoreSettings | None = None, *,
             read_only: bool = False) -> VectorStore:
        """Open an existing store; `expected`'s identity fields must match the stored ones
        (`StoreMismatchError` naming the field otherwise). Replays the log after the snapshot."""
        raise NotImplementedError

    @classmethod
    def open_or_create(cls, folder: str | Path, settings: StoreSettings) -> VectorStore:
        raise NotImplementedError

    def upsert(self, passages: Sequence[Passage]) -> None:
        """Add passages (an existing id is replaced) as one atomic, durable batch."""
        raise NotImplementedError

    def delete_file(self, file_id: str) -> int:
        """Remove every passage of `file_id`; how many were removed (0 if none: no error)."""
        raise NotImplementedError

    def delete_passages(self, passage_ids: Sequence[str]) -> int:
        raise NotImplementedError

    def get(self, passage_id: str) -> Passage | None:
        raise NotImplementedError

    def file_passages(self, file_id: str) -> list[Passage]:
        raise NotImplementedError

    def file_ids(self) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def search(self, query_text: str | None, query_vector: np.ndarray | None, *, k: int = 10,
               options: RankingOptions | None = None, filter: Filter | Mapping | None = None,
               ef: int | None = None) -> list[SearchHit]:
        """The top `k` passages. `options.mode` decides what is needed: dense needs
        `query_vector`, sparse needs `query_text` with at least one analyzer term, hybrid
        needs both (`RetrievalInputError` naming the missing one). `filter` is OpenAI's
        comparison / compound shape (or a parsed `Filter`)."""
        raise NotImplementedError

    def stats(self) -> StoreStats:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Write a snapshot now and start a fresh log."""
        raise NotImplementedError

    def refresh(self) -> int:
        """read_only followers: apply what the writer acknowledged since; how many records."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
