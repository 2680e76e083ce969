"""A durable hybrid (dense + BM25) passage store living in one folder.

    settings.json          the StoreSettings (written once, atomically)
    snapshot.bin           every passage and the dense index as of log sequence number S
    wal-<S>.log            the write-ahead log started after the snapshot at S
    LOCK                   held (flock) by the one writer process

Every write is one log record with the next sequence number: fsynced first, then applied to the
in-memory indexes, then acknowledged. Opening loads the snapshot and replays the records after
it in order (a gap in the numbers is corruption, a torn last frame is an unacknowledged write
and is cut off). A snapshot is written to a temporary file, fsynced and renamed over the old
one; only then does a fresh log start and the old logs go.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from . import blobs, wal
from .analyzer import Analyzer
from .bm25 import BM25Index
from .chunking import ChunkingSettings
from .dense import Metric, as_matrix, check_metric
from .errors import (
    RetrievalInputError,
    StoreClosedError,
    StoreCorruptError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from .exact import ExactIndex
from .filters import Filter, MetadataValue, check_metadata, parse_filter
from .fusion import RankingOptions, fuse
from .hnsw import HNSWIndex
from .locks import RWLock

log = logging.getLogger("astrai.retrieval.store")

DenseKind = Literal["auto", "exact", "hnsw"]
SETTINGS_FILE = "settings.json"
SNAPSHOT_FILE = "snapshot.bin"
LOCK_FILE = "LOCK"
_WAL_NAME = re.compile(r"wal-(\d{20})\.log")
_U32 = struct.Struct("<I")
FORMAT_VERSION = 1


def _wal_name(base: int) -> str:
    return f"wal-{base:020d}.log"


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

    def __post_init__(self) -> None:
        if not isinstance(self.embedder_id, str) or not self.embedder_id:
            raise RetrievalInputError("embedder_id must be a non-empty string", "embedder_id")
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or self.dimension < 1:
            raise RetrievalInputError(f"dimension must be a positive integer, got {self.dimension!r}", "dimension")
        ChunkingSettings(self.max_chunk_size_tokens, self.chunk_overlap_tokens)
        check_metric(self.metric)
        if self.dense_index not in ("auto", "exact", "hnsw"):
            raise RetrievalInputError(f"dense_index must be auto, exact or hnsw, got {self.dense_index!r}",
                                      "dense_index")

    @property
    def chunking(self) -> ChunkingSettings:
        return ChunkingSettings(self.max_chunk_size_tokens, self.chunk_overlap_tokens)

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["analyzer"] = self.analyzer.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> StoreSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["analyzer"] = Analyzer.from_dict(data.get("analyzer", {"lowercase": True, "stem": False,
                                                                      "stopwords": None}))
        return cls(**known)


@dataclass(frozen=True)
class Passage:
    """One searchable passage: `id` unique in the store (e.g. f"{file_id}:{chunk.index}"),
    `file_id` the file it came from (what `delete_file` removes), `text` (what BM25 indexes
    and RAG shows), `vector` (float32 [dimension], from the store's embedder; passages read
    back carry the stored vector, unit length for cosine), `metadata` (string / number /
    boolean values; what filters test; OpenAI's file attributes)."""

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


@dataclass
class _Entry:
    passage_id: str
    file_id: str
    text: str
    metadata: dict[str, MetadataValue]


class _State:
    """The in-memory indexes and tables; mutated only by `apply` (and snapshot loading)."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.entries: dict[int, _Entry] = {}
        self.doc_of: dict[str, int] = {}
        self.files: dict[str, set[int]] = {}
        self.bm25 = BM25Index(k1=settings.bm25_k1, b=settings.bm25_b)
        self.dense: ExactIndex | HNSWIndex = (self._new_hnsw() if settings.dense_index == "hnsw"
                                              else ExactIndex(settings.dimension, settings.metric))
        self.sequence = 0
        self.next_doc = 0

    def _new_hnsw(self) -> HNSWIndex:
        s = self.settings
        return HNSWIndex(s.dimension, M=s.hnsw_m, ef_construction=s.hnsw_ef_construction, ef_search=s.hnsw_ef_search,
                         metric=s.metric)

    def wants_hnsw(self) -> bool:
        return (self.settings.dense_index == "auto" and isinstance(self.dense, ExactIndex)
                and len(self.entries) > self.settings.exact_max_passages)

    def build_hnsw(self) -> HNSWIndex:
        """An HNSW graph over the exact index's vectors (read-only on the state)."""
        ids, vectors = self.dense.items()
        order = np.argsort(ids, kind="stable")
        graph = self._new_hnsw()
        graph.add(ids[order], vectors[order])
        return graph

    def apply(self, record: dict, vectors: np.ndarray | None, tokens: list[list[str]] | None = None) -> None:
        seq = record["seq"]
        if seq != self.sequence + 1:
            raise StoreCorruptError(f"log sequence jumps from {self.sequence} to {seq}: acknowledged writes are missing")
        if record["op"] == "upsert":
            self._delete_docs([self.doc_of[p["id"]] for p in record["passages"] if p["id"] in self.doc_of])
            docs = [p["doc"] for p in record["passages"]]
            analyzer = self.settings.analyzer
            for i, p in enumerate(record["passages"]):
                entry = _Entry(p["id"], p["file_id"], p["text"], p["metadata"])
                self.entries[p["doc"]] = entry
                self.doc_of[entry.passage_id] = p["doc"]
                self.files.setdefault(entry.file_id, set()).add(p["doc"])
                self.bm25.add(p["doc"], tokens[i] if tokens is not None else analyzer.tokens(entry.text))
            if docs:
                self.dense.add(np.asarray(docs, dtype=np.int64), vectors)
                self.next_doc = max(self.next_doc, max(docs) + 1)
        elif record["op"] == "delete":
            self._delete_docs([d for d in record["docs"] if d in self.entries])
        else:
            raise StoreCorruptError(f"unknown log record {record['op']!r}")
        self.sequence = seq

    def _delete_docs(self, docs: list[int]) -> None:
        for doc in docs:
            entry = self.entries.pop(doc)
            del self.doc_of[entry.passage_id]
            members = self.files[entry.file_id]
            members.discard(doc)
            if not members:
                del self.files[entry.file_id]
            self.bm25.delete(doc)
            self.dense.delete(doc)

    # --- snapshot ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        docs = sorted(self.entries)
        table = json.dumps([[d, self.entries[d].passage_id, self.entries[d].file_id, self.entries[d].text,
                             self.entries[d].metadata] for d in docs]).encode()
        header = {"version": FORMAT_VERSION, "sequence": self.sequence, "next_doc": self.next_doc,
                  "dense": "hnsw" if isinstance(self.dense, HNSWIndex) else "exact"}
        return blobs.pack("store-snapshot", header, {"table": np.frombuffer(table, dtype=np.uint8),
                                                     "dense": np.frombuffer(self.dense.to_bytes(), dtype=np.uint8)})

    @classmethod
    def from_bytes(cls, settings: StoreSettings, data: bytes, source: str) -> _State:
        header, arrays = blobs.unpack(data, "store-snapshot", source)
        if header.get("version") != FORMAT_VERSION:
            raise StoreCorruptError(f"{source}: snapshot format {header.get('version')} is not {FORMAT_VERSION}")
        state = cls(settings)
        dense_bytes = arrays["dense"].tobytes()
        state.dense = (HNSWIndex.from_bytes(dense_bytes, source) if header["dense"] == "hnsw"
                       else ExactIndex.from_bytes(dense_bytes, source))
        for doc, passage_id, file_id, text, metadata in json.loads(arrays["table"].tobytes()):
            state.entries[doc] = _Entry(passage_id, file_id, text, metadata)
            state.doc_of[passage_id] = doc
            state.files.setdefault(file_id, set()).add(doc)
            state.bm25.add(doc, settings.analyzer.tokens(text))
        state.sequence = header["sequence"]
        state.next_doc = header["next_doc"]
        return state


def _encode(record: dict, vectors: np.ndarray | None) -> bytes:
    head = json.dumps(record).encode()
    body = b"" if vectors is None else np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    return _U32.pack(len(head)) + head + body


def _decode(payload: bytes, dim: int, source: str) -> tuple[dict, np.ndarray | None]:
    (head_len,) = _U32.unpack_from(payload, 0)
    try:
        record = json.loads(payload[4: 4 + head_len])
    except ValueError as exc:
        raise StoreCorruptError(f"{source}: unreadable log record ({exc})") from None
    if record.get("op") != "upsert":
        return record, None
    vectors = np.frombuffer(payload, dtype="<f4", offset=4 + head_len).astype(np.float32)
    n = len(record["passages"])
    if vectors.size != n * dim:
        raise StoreCorruptError(f"{source}: a log record holds {vectors.size} floats for {n} x {dim} vectors")
    return record, vectors.reshape(n, dim)


class VectorStore:
    """Passages with their vectors, searchable by dense, BM25 or hybrid ranking, durable in
    `folder` (see the module docstring for the files).

    A write returns only after its log record is fsynced AND applied to the in-memory indexes:
    acknowledged == durable and searchable. Records are length + CRC32 framed, so a torn tail
    left by a crash is detected and dropped on open. Snapshots are written to a temporary
    file, fsynced and renamed, so a crash never leaves a half-written one.

    Thread-safe: writers are serialised; searches run concurrently with each other and wait
    only while a write applies to the indexes (building an HNSW graph or a snapshot does not
    block them). One writer process per folder (an OS file lock, `StoreLockedError`); any
    number of `read_only=True` followers, which see new writes on `refresh()`.
    """

    def __init__(self, folder: Path, settings: StoreSettings, *, read_only: bool) -> None:
        self.folder = folder
        self.settings = settings
        self.read_only = read_only
        self._rw = RWLock()
        self._writer_lock = threading.Lock()
        self._closed = False
        self._lock_fd = -1
        self._wal: wal.WalWriter | None = None
        self._snapshot_sequence = 0
        self._follow: tuple[Path, int] | None = None  # read-only: (log file, offset read)
        self._state = _State(settings)

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | Path, settings: StoreSettings) -> VectorStore:
        """A new, empty store in `folder` (created if missing; must not already hold a store)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / SETTINGS_FILE).exists():
            raise FileExistsError(f"{folder} already holds a vector store; use VectorStore.open")
        store = cls(folder, settings, read_only=False)
        store._take_lock()
        blobs.atomic_write(folder / SETTINGS_FILE, json.dumps(settings.to_dict(), indent=1).encode())
        store._wal = wal.WalWriter(folder / _wal_name(0))
        blobs.fsync_dir(folder)
        return store

    @classmethod
    def open(cls, folder: str | Path, expected: StoreSettings | None = None, *,
             read_only: bool = False) -> VectorStore:
        """Open an existing store; `expected`'s identity fields must match the stored ones
        (`StoreMismatchError` naming the field otherwise). Replays the log after the snapshot."""
        folder = Path(folder)
        path = folder / SETTINGS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{folder} holds no vector store (no {SETTINGS_FILE})")
        try:
            settings = StoreSettings.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorruptError(f"{path}: unreadable settings ({exc})") from None
        if expected is not None:
            for name in StoreSettings.IDENTITY:
                if getattr(settings, name) != getattr(expected, name):
                    raise StoreMismatchError(str(folder), name, getattr(settings, name), getattr(expected, name))
        store = cls(folder, settings, read_only=read_only)
        if not read_only:
            store._take_lock()
        try:
            store._load_consistent()
        except BaseException:
            store._release()
            raise
        return store

    def _load_consistent(self, attempts: int = 5) -> None:
        """_load; a follower retries when the writer snapshotted and rotated its logs between
        our reading the snapshot and reading the logs (a missing file or a sequence gap)."""
        for attempt in range(attempts):
            try:
                self._load()
                return
            except (FileNotFoundError, StoreCorruptError):
                if not self.read_only or attempt == attempts - 1:
                    raise

    @classmethod
    def open_or_create(cls, folder: str | Path, settings: StoreSettings) -> VectorStore:
        if (Path(folder) / SETTINGS_FILE).exists():
            return cls.open(folder, settings)
        return cls.create(folder, settings)

    def _take_lock(self) -> None:
        self._lock_fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StoreLockedError(f"another process writes to {self.folder}; open it with read_only=True") from None

    def _release(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _logs(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.folder.iterdir():
            match = _WAL_NAME.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _read_snapshot(self) -> _State:
        path = self.folder / SNAPSHOT_FILE
        if not path.exists():
            return _State(self.settings)
        return _State.from_bytes(self.settings, path.read_bytes(), str(path))

    def _load(self) -> None:
        if not self.read_only:
            for stale in self.folder.glob(f".{SNAPSHOT_FILE}.tmp-*"):
                stale.unlink()  # a snapshot a crash interrupted before its rename
        state = self._read_snapshot()
        self._snapshot_sequence = state.sequence
        logs = self._logs()
        last_path: Path | None = None
        last_end = 0
        for i, (_, path) in enumerate(logs):
            scanned = wal.scan(path)
            if scanned.corrupt:
                raise StoreCorruptError(f"{path}: a damaged record at byte {scanned.end} is followed by intact ones")
            if scanned.torn:
                if i != len(logs) - 1:
                    raise StoreCorruptError(f"{path}: damaged record before the newest log {logs[-1][1].name}")
                if not self.read_only:
                    log.warning("%s: dropping a torn tail of %d bytes (an unacknowledged write)",
                                path, path.stat().st_size - scanned.end)
                    wal.truncate(path, scanned.end)
            for payload in scanned.records:
                record, vectors = _decode(payload, self.settings.dimension, str(path))
                if record["seq"] > state.sequence:
                    state.apply(record, vectors)
            last_path, last_end = path, scanned.end
        if state.wants_hnsw():
            state.dense = state.build_hnsw()
        self._state = state
        if self.read_only:
            self._follow = (last_path, last_end) if last_path is not None else None
        else:
            self._wal = wal.WalWriter(last_path if last_path is not None else self.folder / _wal_name(state.sequence))

    # --- writing ----------------------------------------------------------------------------

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise StoreClosedError(f"the vector store at {self.folder} is closed")
        if write and self.read_only:
            raise StoreReadOnlyError(f"the vector store at {self.folder} was opened read-only")

    def _commit(self, record: dict, vectors: np.ndarray | None, tokens: list[list[str]] | None = None) -> None:
        """Log, fsync, apply: the caller holds the writer lock and has set no sequence yet."""
        state = self._state
        record["seq"] = state.sequence + 1
        assert self._wal is not None
        self._wal.append(_encode(record, vectors))
        with self._rw.write():
            state.apply(record, vectors, tokens)
        if state.wants_hnsw():
            graph = state.build_hnsw()  # readers keep searching the exact index meanwhile
            with self._rw.write():
                state.dense = graph
        if self._wal.size > self.settings.snapshot_wal_bytes:
            self._checkpoint()

    def upsert(self, passages: Sequence[Passage]) -> None:
        """Add passages (an existing id is replaced) as one atomic batch; returns once the batch
        is durable (fsynced) and searchable."""
        self._check_open(write=True)
        if isinstance(passages, Passage):
            passages = [passages]
        rows = []
        seen: set[str] = set()
        for i, p in enumerate(passages):
            where = f"passages[{i}]"
            if not isinstance(p, Passage):
                raise RetrievalInputError(f"{where} must be a Passage, got {type(p).__name__}", where)
            for name in ("id", "file_id", "text"):
                value = getattr(p, name)
                if not isinstance(value, str) or (name != "text" and not value):
                    raise RetrievalInputError(f"{where}.{name} must be a{' non-empty' if name != 'text' else ''} string",
                                              f"{where}.{name}")
            if p.id in seen:
                raise RetrievalInputError(f"passage id {p.id!r} appears twice in one upsert", f"{where}.id")
            seen.add(p.id)
            rows.append({"id": p.id, "file_id": p.file_id, "text": p.text,
                         "metadata": check_metadata(p.metadata, f"{where}.metadata")})
        if not rows:
            return
        dim = self.settings.dimension
        for i, p in enumerate(passages):
            if np.asarray(p.vector).size != dim:
                raise RetrievalInputError(f"passages[{i}].vector must have dimension {dim}, got shape "
                                          f"{tuple(np.shape(p.vector))}", f"passages[{i}].vector")
        # validated (finite; non-zero for cosine) before the log sees it: a logged record always applies
        vectors = as_matrix(np.stack([np.asarray(p.vector, dtype=np.float32).reshape(dim) for p in passages]),
                            dim, self.settings.metric, "passages.vector")
        tokens = [self.settings.analyzer.tokens(row["text"]) for row in rows]
        with self._writer_lock:
            self._check_open(write=True)
            for row in rows:
                row["doc"] = self._state.next_doc
                self._state.next_doc += 1
            self._commit({"op": "upsert", "passages": rows}, vectors, tokens)

    def delete_passages(self, passage_ids: Sequence[str]) -> int:
        """Remove passages by id; how many existed (absent ids are ignored)."""
        self._check_open(write=True)
        with self._writer_lock:
            self._check_open(write=True)
            docs = sorted({self._state.doc_of[i] for i in passage_ids if i in self._state.doc_of})
            if docs:
                self._commit({"op": "delete", "docs": docs}, None)
            return len(docs)

    def delete_file(self, file_id: str) -> int:
        """Remove every passage of `file_id`; how many were removed (0 if none: no error)."""
        self._check_open(write=True)
        with self._writer_lock:
            self._check_open(write=True)
            docs = sorted(self._state.files.get(file_id, ()))
            if docs:
                self._commit({"op": "delete", "docs": docs}, None)
            return len(docs)

    def checkpoint(self) -> None:
        """Write a snapshot now and start a fresh log."""
        self._check_open(write=True)
        with self._writer_lock:
            self._checkpoint()

    def _checkpoint(self) -> None:
        state = self._state
        if state.sequence == self._snapshot_sequence and self._wal is not None and self._wal.size == 0:
            return
        blobs.atomic_write(self.folder / SNAPSHOT_FILE, state.to_bytes())
        self._snapshot_sequence = state.sequence
        old = self._logs()
        fresh = self.folder / _wal_name(state.sequence)
        if self._wal is not None and self._wal.path != fresh:
            self._wal.close()
            self._wal = wal.WalWriter(fresh)
            blobs.fsync_dir(self.folder)
        for _, path in old:
            if path != fresh:
                path.unlink()
        blobs.fsync_dir(self.folder)

    # --- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._state.entries)

    def _passage(self, doc: int) -> Passage:
        entry = self._state.entries[doc]
        return Passage(entry.passage_id, entry.file_id, entry.text, self._state.dense.vector(doc), dict(entry.metadata))

    def get(self, passage_id: str) -> Passage | None:
        self._check_open()
        with self._rw.read():
            doc = self._state.doc_of.get(passage_id)
            return None if doc is None else self._passage(doc)

    def file_passages(self, file_id: str) -> list[Passage]:
        """A file's passages in the order they were added."""
        self._check_open()
        with self._rw.read():
            return [self._passage(doc) for doc in sorted(self._state.files.get(file_id, ()))]

    def file_ids(self) -> list[str]:
        self._check_open()
        with self._rw.read():
            return sorted(self._state.files)

    def search(self, query_text: str | None, query_vector: np.ndarray | None, *, k: int = 10,
               options: RankingOptions | None = None, filter: Filter | Mapping | None = None,
               ef: int | None = None) -> list[SearchHit]:
        """The top `k` passages. `options.mode` decides what is needed: dense needs
        `query_vector`, sparse needs `query_text`, hybrid both (`RetrievalInputError` naming
        the missing one). `filter` is OpenAI's comparison / compound shape (or a parsed
        `Filter`). A sparse-only query without any analyzer term is an error; in hybrid mode
        such a query just contributes no BM25 candidates."""
        self._check_open()
        options = options or RankingOptions()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RetrievalInputError(f"k must be a positive integer, got {k!r}", "max_num_results")
        parsed = parse_filter(filter)
        q = None
        if options.uses_dense:
            if query_vector is None:
                raise RetrievalInputError(f"ranking mode {options.mode!r} needs a query vector", "query_vector")
            q = as_matrix(query_vector, self.settings.dimension, self.settings.metric, "query_vector")[0]
        terms: list[str] = []
        if options.uses_sparse:
            if not isinstance(query_text, str) or not query_text.strip():
                raise RetrievalInputError(f"ranking mode {options.mode!r} needs a non-empty query text", "query")
            terms = self.settings.analyzer.tokens(query_text)
            if not terms and options.mode == "sparse":
                raise RetrievalInputError("the query has no searchable words", "query")
        candidates = options.candidates_for(k)
        with self._rw.read():
            state = self._state
            allowed = None
            if parsed is not None:
                allowed = {doc for doc, entry in state.entries.items() if parsed.matches(entry.metadata)}
                if not allowed:
                    return []
            dense: list[tuple[int, float]] = []
            if q is not None:
                ids, scores = state.dense.search(q, candidates, ef=ef, allowed=allowed)
                dense = list(zip(ids.tolist(), scores.tolist(), strict=True))
            sparse = state.bm25.search(terms, candidates, allowed=allowed) if terms else []
            return [SearchHit(self._passage(h.id), h.score, h.dense_rank, h.sparse_rank, h.dense_score, h.sparse_score)
                    for h in fuse(dense, sparse, options, k)]

    def stats(self) -> StoreStats:
        self._check_open()
        with self._rw.read():
            state = self._state
            snapshot = self.folder / SNAPSHOT_FILE
            return StoreStats(
                passages=len(state.entries), files=len(state.files),
                dense_index="hnsw" if isinstance(state.dense, HNSWIndex) else "exact",
                native=isinstance(state.dense, HNSWIndex) and state.dense.native,
                wal_bytes=self._wal.size if self._wal is not None else 0,
                snapshot_bytes=snapshot.stat().st_size if snapshot.exists() else 0,
                last_sequence=state.sequence, snapshot_sequence=self._snapshot_sequence)

    # --- following ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """read_only followers: apply what the writer acknowledged since the last look; how
        many records. Reloads from the snapshot if the writer's logs moved past us."""
        self._check_open()
        if not self.read_only:
            return 0
        before = self._state.sequence
        logs = self._logs()
        position = self._follow
        paths = [path for _, path in logs]
        if position is None or position[0] not in paths:
            follow_on = [path for base, path in logs if base == before]
            if not follow_on:  # the writer snapshotted past us: start over from the snapshot
                if logs or (self.folder / SNAPSHOT_FILE).exists():
                    self._reload()
                return self._state.sequence - before
            position = (follow_on[0], 0)
        path, offset = position
        pending: list[tuple[dict, np.ndarray | None]] = []
        try:
            for candidate in paths[paths.index(path):]:
                scanned = wal.scan(candidate, offset if candidate == path else 0)
                pending += [_decode(p, self.settings.dimension, str(candidate)) for p in scanned.records]
                position = (candidate, scanned.end)
        except FileNotFoundError:  # rotated away while we read: the snapshot has it
            self._reload()
            return self._state.sequence - before
        fresh = [(r, v) for r, v in pending if r["seq"] > before]
        if fresh and fresh[0][0]["seq"] != before + 1:
            self._reload()
            return self._state.sequence - before
        if fresh:
            with self._rw.write():
                for record, vectors in fresh:
                    self._state.apply(record, vectors)
            if self._state.wants_hnsw():
                graph = self._state.build_hnsw()
                with self._rw.write():
                    self._state.dense = graph
        self._follow = position
        return self._state.sequence - before

    def _reload(self) -> None:
        fresh = VectorStore(self.folder, self.settings, read_only=True)
        fresh._load_consistent()
        with self._rw.write():
            self._state = fresh._state
            self._snapshot_sequence = fresh._snapshot_sequence
            self._follow = fresh._follow

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Snapshot (writers, if the log holds anything) and release the folder."""
        if self._closed:
            return
        with self._writer_lock:
            if not self.read_only and self._wal is not None and self._wal.size > 0:
                self._checkpoint()
            self._closed = True
            self._release()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_lock_fd", -1) >= 0:
            self._release()

