"""BM25: our index vs bm25s (Lucene variant) with the same tokens: build time, queries/s (one
thread each, top 10), score and top-10 agreement, and the cost of adding 1% more passages
relative to a full build.

    python -m bench.retrieval.bm25_bench [--quick] [--n 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bm25s
import numpy as np
from astrai.retrieval import Analyzer, BM25Index

from .common import cached_passages, machine


def make_queries(corpus: list[list[str]], n: int, seed: int = 1) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    queries = []
    while len(queries) < n:
        doc = corpus[rng.integers(len(corpus))]
        if doc:
            queries.append([doc[i] for i in rng.integers(0, len(doc), int(rng.integers(2, 7)))])
    return queries


def build_ours(corpus: list[list[str]], start: int = 0) -> tuple[BM25Index, float]:
    index = BM25Index()
    begin = time.perf_counter()
    for i, tokens in enumerate(corpus):
        index.add(start + i, tokens)
    return index, time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k passages, 300 queries")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    n, nq = (20_000, 300) if args.quick else (args.n, args.queries)
    texts = cached_passages(n)
    analyzer = Analyzer()
    corpus = [analyzer.tokens(t) for t in texts]
    queries = make_queries(corpus, nq)
    print(f"{len(corpus)} passages, {np.mean([len(c) for c in corpus]):.0f} tokens each, {len(queries)} queries",
          flush=True)

    ours, ours_build = build_ours(corpus)
    theirs = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    start = time.perf_counter()
    theirs.index(corpus, show_progress=False)
    theirs_build = time.perf_counter() - start

    start = time.perf_counter()
    ours_top = [ours.search(q, 10) for q in queries]
    ours_qps = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    theirs.retrieve(queries, k=10, show_progress=False, n_threads=0)
    theirs_qps = len(queries) / (time.perf_counter() - start)

    # agreement, against bm25s' full score vector (its retrieve() breaks ties arbitrarily)
    same = worst = 0.0
    for q, mine in zip(queries, ours_top, strict=True):
        scores = theirs.get_scores([t for t in q if t in theirs.vocab_dict]).astype(np.float64)
        matched = np.flatnonzero(scores > 0)
        reference = sorted(matched.tolist(), key=lambda d: (-scores[d], d))[:10]
        same += [d for d, _ in mine] == reference
        ids, ours_scores = ours.scores(q)
        worst = max(worst, float((np.abs(ours_scores - scores[ids]) / scores[ids]).max()))
    # incremental: 1% more passages into an index of the other 99%
    cut = len(corpus) - max(1, len(corpus) // 100)
    base, _ = build_ours(corpus[:cut])
    start = time.perf_counter()
    for i, tokens in enumerate(corpus[cut:], start=cut):
        base.add(i, tokens)
    add_seconds = time.perf_counter() - start
    base.search(queries[0], 10)  # the first search after adds pays the length normalisation

    result = {
        "machine": machine(), "passages": len(corpus), "queries": len(queries),
        "build_s": {"ours": round(ours_build, 2), "bm25s": round(theirs_build, 2)},
        "qps": {"ours": round(ours_qps, 1), "bm25s": round(theirs_qps, 1), "ratio": round(ours_qps / theirs_qps, 2)},
        "same_top10": round(same / len(queries), 4), "max_relative_score_diff": worst,
        "add_1pct_vs_full_build": round(add_seconds / ours_build, 4),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
