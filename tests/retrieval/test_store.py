"""VectorStore: search modes and filters, replacement and deletion, reopening, settings
mismatches, torn and damaged files, followers, locks, and searches during writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from astrai.retrieval import (
    Analyzer,
    FilterError,
    Passage,
    RankingOptions,
    RetrievalInputError,
    StoreClosedError,
    StoreCorruptError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
    StoreSettings,
    VectorStore,
)

from .store_child import DIM, passage, vector

CHILD = Path(__file__).with_name("store_child.py")
SETTINGS = StoreSettings("crash-test", DIM)


def run_child(*args: str) -> None:
    subprocess.run([sys.executable, str(CHILD), *args], check=True, timeout=120, env=os.environ.copy())


@pytest.fixture
def store(tmp_path):
    with VectorStore.create(tmp_path / "s", SETTINGS) as s:
        s.upsert([passage(i) for i in range(40)])
        yield s


def test_search_modes(store):
    dense = store.search(None, vector(7), k=3, options=RankingOptions(mode="dense"))
    assert dense[0].passage.id == "p7" and dense[0].score == pytest.approx(1.0, abs=1e-5)
    assert dense[0].sparse_rank is None and dense[0].dense_rank == 1
    sparse = store.search("word12", None, k=3, options=RankingOptions(mode="sparse"))
    assert [h.passage.id for h in sparse] == ["p12"]
    hybrid = store.search("word12", vector(12), k=5)
    assert hybrid[0].passage.id == "p12" and hybrid[0].score == pytest.approx(1.0)
    assert hybrid[0].dense_rank == 1 and hybrid[0].sparse_rank == 1
    hit = hybrid[0].passage
    assert hit.file_id == "file5" and hit.metadata == {"i": 12} and hit.text.startswith("passage number 12")
    np.testing.assert_allclose(hit.vector, vector(12) / np.linalg.norm(vector(12)), rtol=1e-5)


def test_filters_and_threshold(store):
    hits = store.search("passage", vector(3), k=40, filter={"type": "lt", "key": "i", "value": 10})
    assert {h.passage.metadata["i"] for h in hits} <= set(range(10)) and len(hits) == 10
    assert store.search("passage", vector(3), k=5, filter={"type": "eq", "key": "i", "value": 999}) == []
    strict = store.search("word3", vector(3), k=40, options=RankingOptions(score_threshold=0.99))
    assert [h.passage.id for h in strict] == ["p3"]


def test_upsert_replaces_and_deletes_persist(tmp_path):
    folder = tmp_path / "s"
    with VectorStore.create(folder, SETTINGS) as s:
        s.upsert([passage(i) for i in range(20)])
        s.upsert([Passage("p3", "file3", "entirely different words", vector(100), {"v": 2})])
        assert s.search("word3", None, options=RankingOptions(mode="sparse")) == []
        assert s.get("p3").text == "entirely different words" and len(s) == 20
        assert s.delete_file("file1") == 3 and s.delete_file("file1") == 0
        assert s.delete_passages(["p2", "nope"]) == 1
        remaining = {p.id for f in s.file_ids() for p in s.file_passages(f)}
    with VectorStore.open(folder, SETTINGS) as s:
        assert {p.id for f in s.file_ids() for p in s.file_passages(f)} == remaining and len(s) == 16
        assert s.search("different", None, options=RankingOptions(mode="sparse"))[0].passage.metadata == {"v": 2}
        assert s.get("p1") is None and s.get("p2") is None


@pytest.mark.parametrize("field,value", [
    ("embedder_id", "another-model"), ("dimension", DIM + 1), ("metric", "l2"), ("max_chunk_size_tokens", 1000),
    ("chunk_overlap_tokens", 100), ("analyzer", Analyzer(stem=True)),
])
def test_settings_mismatch_names_the_field(tmp_path, field, value):
    VectorStore.create(tmp_path / "s", SETTINGS).close()
    expected = StoreSettings(**{**{f: getattr(SETTINGS, f) for f in SETTINGS.__dataclass_fields__}, field: value})
    with pytest.raises(StoreMismatchError) as info:
        VectorStore.open(tmp_path / "s", expected)
    assert info.value.field == field and field in str(info.value)
    tuned = StoreSettings("crash-test", DIM, hnsw_m=32, bm25_k1=2.0)  # tuning fields: the stored ones win
    with VectorStore.open(tmp_path / "s", tuned) as s:
        assert s.settings.hnsw_m == 16 and s.settings.bm25_k1 == 1.2


def test_torn_wal_tail_is_dropped(tmp_path):
    folder = tmp_path / "s"
    run_child(str(folder), "write-and-exit", "3")
    (log,) = folder.glob("wal-*.log")
    good = log.read_bytes()
    log.write_bytes(good + good[:37])  # half of a frame: a write the crash interrupted
    with VectorStore.open(folder, SETTINGS) as s:
        assert len(s) == 30 and log.stat().st_size == len(good)
        s.upsert([passage(99)])
    with VectorStore.open(folder, SETTINGS) as s:
        assert len(s) == 31 and s.get("p99") is not None


def test_torn_last_record_with_bad_crc_is_dropped(tmp_path):
    folder = tmp_path / "s"
    run_child(str(folder), "write-and-exit", "3")
    (log,) = folder.glob("wal-*.log")
    data = bytearray(log.read_bytes())
    data[-5] ^= 0xFF  # the last frame's bytes never fully reached the disk
    log.write_bytes(bytes(data))
    with VectorStore.open(folder, SETTINGS) as s:
        assert len(s) == 20


def test_damage_before_intact_records_is_refused(tmp_path):
    folder = tmp_path / "s"
    run_child(str(folder), "write-and-exit", "3")
    (log,) = folder.glob("wal-*.log")
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF  # inside the first record; two intact ones follow
    log.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="damaged record"):
        VectorStore.open(folder, SETTINGS)


def test_damaged_snapshot_is_refused_and_stale_temp_ignored(tmp_path):
    folder = tmp_path / "s"
    with VectorStore.create(folder, SETTINGS) as s:
        s.upsert([passage(i) for i in range(5)])
    (folder / ".snapshot.bin.tmp-12345").write_bytes(b"half a snapshot")
    with VectorStore.open(folder) as s:
        assert len(s) == 5
    assert not list(folder.glob(".snapshot.bin.tmp-*"))
    data = bytearray((folder / "snapshot.bin").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "snapshot.bin").write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="checksum"):
        VectorStore.open(folder)


def test_one_writer_followers_and_closed(tmp_path):
    folder = tmp_path / "s"
    writer = VectorStore.create(folder, SETTINGS)
    writer.upsert([passage(i) for i in range(10)])
    with pytest.raises(StoreLockedError):
        VectorStore.open(folder)
    follower = VectorStore.open(folder, read_only=True)
    assert len(follower) == 10
    with pytest.raises(StoreReadOnlyError):
        follower.upsert([passage(50)])
    writer.upsert([passage(10)])
    assert follower.refresh() == 1 and follower.get("p10") is not None
    writer.checkpoint()  # a fresh log starts at the follower's sequence: it follows on
    writer.upsert([passage(11)])
    assert follower.refresh() == 1 and len(follower) == 12
    writer.upsert([passage(12)])
    writer.checkpoint()
    writer.upsert([passage(13)])
    assert follower.refresh() == 2 and len(follower) == 14  # its log is gone: reloaded from the snapshot
    writer.close()
    with pytest.raises(StoreClosedError):
        writer.search("x", None, options=RankingOptions(mode="sparse"))
    follower.close()
    with VectorStore.open(folder) as again:
        assert len(again) == 14


def test_bad_inputs_are_clear(store):
    with pytest.raises(RetrievalInputError) as info:
        store.search("text", None)
    assert info.value.param == "query_vector"
    with pytest.raises(RetrievalInputError) as info:
        store.search("   ", vector(1))
    assert info.value.param == "query"
    with pytest.raises(RetrievalInputError, match="searchable"):
        store.search("!!!", None, options=RankingOptions(mode="sparse"))
    with pytest.raises(RetrievalInputError) as info:
        store.search("text", np.ones(DIM + 1))
    assert info.value.param == "query_vector"
    with pytest.raises(RetrievalInputError) as info:
        store.search("text", vector(1), k=0)
    assert info.value.param == "max_num_results"
    with pytest.raises(FilterError):
        store.search("text", vector(1), filter={"type": "eq"})
    with pytest.raises(RetrievalInputError) as info:
        store.upsert([passage(1), passage(1)])
    assert info.value.param == "passages[1].id"
    with pytest.raises(RetrievalInputError) as info:
        store.upsert([Passage("x", "f", "t", np.zeros(DIM))])
    with pytest.raises(RetrievalInputError) as info:
        store.upsert([Passage("x", "f", "t", np.ones(3))])
    assert info.value.param == "passages[0].vector"
    with pytest.raises(RetrievalInputError) as info:
        store.upsert([Passage("x", "f", "t", np.ones(DIM), {"k": [1]})])
    assert info.value.param == "passages[0].metadata.k"
    assert store.search("", vector(1), options=RankingOptions(mode="dense"))  # text not needed for dense
    assert len(store) == 40  # nothing half-applied


def test_exact_switches_to_hnsw_and_persists(tmp_path):
    folder = tmp_path / "s"
    settings = StoreSettings("crash-test", DIM, exact_max_passages=100, hnsw_ef_construction=40)
    with VectorStore.create(folder, settings) as s:
        s.upsert([passage(i) for i in range(100)])
        assert s.stats().dense_index == "exact"
        s.upsert([passage(i) for i in range(100, 300)])
        stats = s.stats()
        assert stats.dense_index == "hnsw" and stats.passages == 300
        assert s.search(None, vector(250), options=RankingOptions(mode="dense"))[0].passage.id == "p250"
    with VectorStore.open(folder) as s:
        assert s.stats().dense_index == "hnsw" and len(s) == 300
        assert s.search(None, vector(5), options=RankingOptions(mode="dense"))[0].passage.id == "p5"


def test_acknowledged_is_searchable_while_others_search(tmp_path):
    folder = tmp_path / "s"
    settings = StoreSettings("crash-test", DIM, exact_max_passages=150, hnsw_ef_construction=40)
    errors: list[BaseException] = []
    stop = threading.Event()
    with VectorStore.create(folder, settings) as s:
        s.upsert([passage(0)])

        def searcher() -> None:
            rng = np.random.default_rng(threading.get_ident() % 1000)
            while not stop.is_set():
                try:
                    hits = s.search("passage word", rng.normal(size=DIM), k=5)
                    assert hits and all(h.passage.id.startswith("p") for h in hits)
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=searcher) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for b in range(30):
                ids = range(1 + b * 10, 11 + b * 10)
                s.upsert([passage(i) for i in ids])
                for i in ids:  # acknowledged == searchable, at once, from any thread
                    assert s.search(None, vector(i), k=1, options=RankingOptions(mode="dense"))[0].passage.id == f"p{i}"
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:1]
        assert s.stats().dense_index == "hnsw"
