"""RAG on the bundled model: cached-passage TTFT, cache-aware vs relevance order, retrieval answers.

    python -m bench.rag [--quick] [--out results.json]

Corpus: the Python language reference topics that ship with every Python (`pydoc_data.topics`),
chunked with the server's own settings (the embedder's tokens), embedded with all-MiniLM-L6-v2
and stored in an astrai.retrieval VectorStore in a temporary folder. Prompts are built exactly as
the server builds them (`astrai.server.rag.prompt.build_prompt`) and run on one Engine
(`Engine.from_pretrained("smollm2-135m-instruct")`, its defaults):

1. ttft: prompts of 5 passages (~1.5k tokens). Cold: passages never seen; cached: the same
   passages again under another question. Median TTFT of each, and cached / cold (aim <= 0.3).
2. zipf: 200 requests, each retrieving 3 of 40 passages drawn from a Zipf(1.1) popularity, in the
   order a retriever would rank them (a per-request random order of the set). Run twice on
   fresh engines with a small KV pool: `relevance` order and `cache_aware` order; the prefix
   cache hit rate (cached prompt tokens / prompt tokens) of each and their ratio (aim >= 1.5).
3. answers: questions whose answer phrase is known; how often the top 5 hybrid hits contain it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

QUESTIONS = [  # (question, a phrase the right passage contains)
    ("What does the with statement wrap the execution of a block with?", "context manager"),
    ("Which statement exits the nearest enclosing loop?", "nearest enclosing"),
    ("What does the global statement declare?", "global"),
    ("What happens when a generator function's yield expression is evaluated?", "generator"),
    ("What does the assert statement do when debugging is on?", "AssertionError"),
    ("How does the nonlocal statement bind identifiers?", "enclosing scope"),
    ("Which method does the in operator call on a container?", "__contains__"),
    ("What does the lambda expression create?", "anonymous function"),
    ("What exception does the raise statement re-raise with no expression?", "re-raise"),
    ("What is the result of the floor division operator?", "floor"),
    ("What do f-strings evaluate inside replacement fields?", "expression"),
    ("Which statement does nothing and is a placeholder?", "pass"),
]


def corpus(encoder, size: int, overlap: int, topics_limit: int | None = None) -> list[tuple[str, str]]:
    """(passage id, text) chunks of the Python reference topics (the first `topics_limit` of them)."""
    from pydoc_data.topics import topics

    from astrai.retrieval import ChunkingSettings, chunk_text

    def spans(text: str) -> list[tuple[int, int]]:
        return list(encoder.tokenizer.encode(text, add_special_tokens=False).offsets)

    out = []
    for name in sorted(topics)[:topics_limit]:
        for chunk in chunk_text(topics[name], ChunkingSettings(size, overlap), spans):
            out.append((f"{name}:{chunk.index}", chunk.text))
    return out


def build_store(folder: Path, encoder, passages: list[tuple[str, str]]):
    from astrai.retrieval import Passage, StoreSettings, VectorStore

    store = VectorStore.create(folder, StoreSettings(embedder_id=encoder.name, dimension=encoder.dimension))
    vectors = encoder.encode([t for _, t in passages], truncate=True).numpy()
    store.upsert([Passage(id=pid, file_id=pid.split(":")[0], text=text, vector=v)
                  for (pid, text), v in zip(passages, vectors, strict=True)])
    return store


def ttft_section(engine, store, encoder, repeats: int) -> dict:
    from astrai.retrieval import PassagePopularity
    from astrai.scheduler import SamplingParams
    from astrai.server.rag.prompt import build_prompt

    params = SamplingParams(max_tokens=1, temperature=0.0)
    hits_all = store.search(None, encoder.encode(["python statements"])[0].numpy(), k=5 * (repeats + 1),
                            options=_dense())
    cold, warm, lengths = [], [], []
    for r in range(repeats):
        hits = hits_all[5 * r : 5 * r + 5]
        for question, bucket in (("What is this about?", cold), ("Summarise the passages.", warm)):
            prompt = build_prompt(engine.tokenizer, [{"role": "user", "content": question}], hits, lambda f: f,
                                  order="relevance", popularity=PassagePopularity(),
                                  cached_prefix_len=engine.lookup_prefix, budget=engine.max_model_len - 8)
            out = engine.generate([prompt.token_ids], params)[0]
            bucket.append(out.metrics.ttft)
            lengths.append(len(prompt.token_ids))
    c, w = statistics.median(cold), statistics.median(warm)
    return {"prompt_tokens_median": statistics.median(lengths), "cold_ttft_ms": round(1000 * c, 1),
            "cached_ttft_ms": round(1000 * w, 1), "cached_over_cold": round(w / c, 3), "repeats": repeats}


def _dense():
    from astrai.retrieval import RankingOptions

    return RankingOptions(mode="dense")


def zipf_section(engine, store, passages: list[tuple[str, str]], requests: int, num_pages: int, seed: int = 0) -> dict:
    from astrai.retrieval import PassagePopularity, SearchHit
    from astrai.scheduler import SamplingParams
    from astrai.server.rag.prompt import build_prompt

    rng = random.Random(seed)
    pool = passages[:40]
    weights = [1 / (i + 1) ** 1.1 for i in range(len(pool))]
    workload = []
    for _ in range(requests):
        chosen: list[int] = []
        while len(chosen) < 3:
            i = rng.choices(range(len(pool)), weights)[0]
            if i not in chosen:
                chosen.append(i)
        rng.shuffle(chosen)  # the retriever's ranking of the set differs per question
        workload.append((chosen, f"Question {rng.randrange(10**6)}: what do these passages say?"))
    params = SamplingParams(max_tokens=1, temperature=0.0)
    result = {}
    for order in ("relevance", "cache_aware"):
        eng = engine.with_settings(num_pages=num_pages)
        popularity = PassagePopularity()
        try:
            for chosen, question in workload:
                hits = [SearchHit(store.get(pool[i][0]), 1.0 - r / 10, r + 1, None, None, None)
                        for r, i in enumerate(chosen)]
                prompt = build_prompt(eng.tokenizer, [{"role": "user", "content": question}], hits, lambda f: f,
                                      order=order, popularity=popularity, cached_prefix_len=eng.lookup_prefix,
                                      budget=eng.max_model_len - 8)
                eng.generate([prompt.token_ids], params)
            stats = eng.stats()
            result[order] = round(stats["prefix_cache_hits"] / max(1, stats["prefix_cache_queries"]), 4)
        finally:
            eng.shutdown()
    result["ratio"] = round(result["cache_aware"] / max(result["relevance"], 1e-9), 3)
    result.update(requests=requests, passages=len(pool), num_pages=num_pages, zipf_s=1.1)
    return result


def answers_section(store, encoder) -> dict:
    from astrai.retrieval import RankingOptions

    found = 0
    misses = []
    for question, phrase in QUESTIONS:
        hits = store.search(question, encoder.encode([question])[0].numpy(), k=5, options=RankingOptions())
        if any(phrase.lower() in h.passage.text.lower() for h in hits):
            found += 1
        else:
            misses.append(question)
    return {"questions": len(QUESTIONS), "answer_in_top5": found, "misses": misses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from astrai.model import load_encoder
    from astrai.scheduler import Engine

    encoder = load_encoder()
    start = time.perf_counter()
    passages = corpus(encoder, size=254, overlap=63)
    with tempfile.TemporaryDirectory() as folder:
        store = build_store(Path(folder) / "store", encoder, passages)
        index_s = time.perf_counter() - start
        engine = Engine.from_pretrained("smollm2-135m-instruct", max_model_len=2048)
        try:
            result = {
                "store": {"passages": len(store), "build_s": round(index_s, 1)},
                "answers": answers_section(store, encoder),
                "ttft": ttft_section(engine, store, encoder, repeats=2 if args.quick else 5),
                "zipf": zipf_section(engine, store, passages, requests=60 if args.quick else 200, num_pages=160),
                "engine": str(engine.describe().weights), "numpy": np.__version__,
            }
        finally:
            engine.shutdown()
            store.close()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
