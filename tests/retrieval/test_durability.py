"""SIGKILL in the middle of an ingest loses no acknowledged passage and never leaves a store
that cannot open: a real child process writes (store_child.py), prints each id after its
upsert returned, and is killed at a random moment; the store is then reopened and searched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astrai.retrieval import RankingOptions, VectorStore

from .store_child import passage, settings, vector

CHILD = Path(__file__).with_name("store_child.py")


def ingest_until_killed(folder: Path, *, batch: int, snapshot_bytes: int, exact_max: int, acks: int,
                        rng: np.random.Generator) -> set[str]:
    """Start the child, wait for `acks` acknowledged batches, SIGKILL it a random 0-30 ms later
    (so the kill lands anywhere: in a write, an fsync, a snapshot), return every id it printed."""
    proc = subprocess.Popen([sys.executable, str(CHILD), str(folder), "ingest", str(batch), str(snapshot_bytes),
                             str(exact_max)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    acked: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        for _ in range(acks):
            line = proc.stdout.readline()
            assert line, f"the child stopped early: {proc.stderr.read()[-2000:]}"
            acked.update(line.split())
            assert time.monotonic() < deadline
        time.sleep(float(rng.uniform(0, 0.03)))
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for line in out.splitlines():  # printed before the kill: acknowledged too
        acked.update(line.split())
    return acked


@pytest.mark.parametrize("case", [
    dict(batch=5, snapshot_bytes=64 << 20, exact_max=20_000),  # log only
    dict(batch=3, snapshot_bytes=3_000, exact_max=20_000),     # snapshots every few batches
    dict(batch=8, snapshot_bytes=20_000, exact_max=60),        # and an HNSW graph in the snapshots
], ids=["wal", "snapshots", "hnsw"])
def test_sigkill_mid_ingest_loses_no_acknowledged_passage(tmp_path, case):
    rng = np.random.default_rng(len(str(case)))
    folder = tmp_path / "store"
    acked: set[str] = set()
    for round_ in range(3):  # kill, reopen (the child continues where the store ends), kill again
        acked |= ingest_until_killed(folder, acks=int(rng.integers(4, 25)), rng=rng, **case)
        with VectorStore.open(folder, settings(case["snapshot_bytes"], case["exact_max"])) as store:
            missing = [i for i in acked if store.get(i) is None]
            assert not missing, f"round {round_}: acknowledged but lost: {sorted(missing)[:10]}"
            for pid in sorted(acked)[:: max(1, len(acked) // 25)]:
                i = int(pid[1:])
                got = store.get(pid)
                assert got.text == passage(i).text and got.metadata == {"i": i}
                top = store.search(None, vector(i), k=1, options=RankingOptions(mode="dense"))
                assert top[0].passage.id == pid
                assert store.search(f"word{i}", None, k=1, options=RankingOptions(mode="sparse"))[0].passage.id == pid
            # passages are written in id order: whatever survived is a prefix, never a hole
            assert sorted(int(p.id[1:]) for f in store.file_ids() for p in store.file_passages(f)) == list(range(len(store)))
    with VectorStore.open(folder) as store:  # the case reached the state it is named for
        if case["snapshot_bytes"] < 1 << 20:
            assert (folder / "snapshot.bin").exists()
        if case["exact_max"] < 1000:
            assert store.stats().dense_index == "hnsw"
