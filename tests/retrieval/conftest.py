"""Shared inputs for the retrieval tests: real text that ships with Python (the standard
library's docstrings), deterministic for a given Python version."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

MODULES = ("os", "re", "json", "collections", "argparse", "email.message", "http.client", "unittest",
           "asyncio", "logging", "subprocess", "pathlib", "decimal", "inspect", "ast", "threading", "socket",
           "functools", "itertools", "string", "textwrap", "datetime", "calendar", "csv", "zipfile", "tarfile",
           "shutil", "tempfile", "heapq", "bisect", "statistics", "random", "fractions", "contextlib", "abc",
           "enum", "dataclasses", "pickle", "sqlite3", "urllib.parse", "html.parser", "xml.dom.minidom")


def stdlib_docs(limit: int | None = None) -> list[str]:
    """Docstrings of the standard library's public functions, classes and methods, one passage
    each (at least 40 characters), in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if inspect.ismodule(obj):
                continue
            members = [obj] + ([v for m, v in sorted(vars(obj).items()) if not m.startswith("_")]
                               if inspect.isclass(obj) else [])
            for member in members:
                doc = inspect.getdoc(member) if callable(member) or inspect.isclass(member) else None
                if doc and len(doc) >= 40 and doc not in seen:
                    seen.add(doc)
                    out.append(doc)
                    if limit is not None and len(out) >= limit:
                        return out
    return out


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return stdlib_docs()


def clustered(n: int, dim: int, *, queries: int = 0, clusters: int = 64, spread: float = 0.35,
              seed: int = 0) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs (dense clusters, sparse gaps: harder for a proximity graph than uniform
    noise); with `queries`, also that many query points drawn from the same blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        return (centers[rng.integers(0, clusters, count)] + spread * rng.normal(size=(count, dim))).astype(np.float32)

    points = draw(n)
    return (points, draw(queries)) if queries else points


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / |truth| over rows (-1 padding ignored)."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
