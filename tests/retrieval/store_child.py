"""A child process for the crash tests: writes passages to a store and prints each id once its
upsert has returned (acknowledged), flushing every line.

    python store_child.py FOLDER ingest BATCH SNAPSHOT_BYTES EXACT_MAX   # until killed
    python store_child.py FOLDER write-and-exit BATCHES                # then os._exit: no close
"""

from __future__ import annotations

import os
import sys

import numpy as np
from astrai.retrieval import Passage, StoreSettings, VectorStore

DIM = 16


def vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).normal(size=DIM).astype(np.float32)


def passage(i: int) -> Passage:
    return Passage(f"p{i}", f"file{i % 7}", f"passage number {i} word{i} shared text", vector(i), {"i": i})


def settings(snapshot_bytes: int = 64 << 20, exact_max: int = 20_000) -> StoreSettings:
    return StoreSettings("crash-test", DIM, snapshot_wal_bytes=snapshot_bytes, exact_max_passages=exact_max,
                         hnsw_ef_construction=40)


def main() -> None:
    folder, mode = sys.argv[1], sys.argv[2]
    if mode == "ingest":
        batch, snapshot_bytes, exact_max = (int(a) for a in sys.argv[3:6])
        store = VectorStore.open_or_create(folder, settings(snapshot_bytes, exact_max))
        i = len(store)
        while True:
            ids = range(i, i + batch)
            store.upsert([passage(j) for j in ids])
            print(" ".join(f"p{j}" for j in ids), flush=True)
            i += batch
    elif mode == "write-and-exit":
        store = VectorStore.open_or_create(folder, settings())
        for b in range(int(sys.argv[3])):
            store.upsert([passage(j) for j in range(b * 10, b * 10 + 10)])
        sys.stdout.flush()
        os._exit(0)  # like a crash: no close(), no snapshot
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
