"""Passages from text that ships on the machine: the docstrings of Python's standard library and
of the installed packages, read with `ast` (nothing is imported), in a fixed file order, cut
into passages of at most `max_words` words. Deterministic for a given set of installed files."""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

_WORDS = re.compile(r"\S+")


def source_roots() -> list[Path]:
    """The standard library first, then site-packages."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    return [r for r in roots if r.is_dir()]


def _docstrings(path: Path) -> Iterator[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def name_words(qualified: str) -> str:
    """"email.message.EmailMessage.get_content_type" -> "email message email message get content type"."""
    return " ".join(w.lower() for part in re.split(r"[._]+", qualified) for w in _CAMEL.findall(part))


def named_passages(limit: int, *, min_words: int = 12, max_words: int = 120) -> list[tuple[str, str]]:
    """(qualified name, the first `max_words` words of its docstring) for the standard library's
    public functions and classes, unique names and texts only: a known-item set where the query
    is the name in words and the answer is its docstring."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    root = source_roots()[0]
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        if "site-packages" in rel.parts or "test" in rel.parts or any(p.startswith("_") for p in rel.parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, RecursionError, OSError):
            continue
        module = ".".join(rel.parts)
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            members: list[tuple[str, ast.AST]] = [(node.name, node)]
            if isinstance(node, ast.ClassDef):
                members += [(f"{node.name}.{m.name}", m) for m in node.body
                            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for name, member in members:
                if any(part.startswith("_") for part in name.split(".")):
                    continue
                doc = ast.get_docstring(member)
                words = _WORDS.findall(doc or "")
                if len(words) < min_words:
                    continue
                text = " ".join(words[:max_words])
                qualified = f"{module}.{name}"
                if qualified in seen or text in seen:
                    continue
                seen.update((qualified, text))
                out.append((qualified, text))
                if len(out) >= limit:
                    return out
    return out


def passages(limit: int, *, min_words: int = 12, max_words: int = 120) -> list[str]:
    """Up to `limit` distinct passages."""
    out: list[str] = []
    seen: set[bytes] = set()
    for root in source_roots():
        for path in sorted(root.rglob("*.py")):
            if "test" in path.parts or path.name.startswith("test_"):
                continue
            for doc in _docstrings(path):
                words = _WORDS.findall(doc)
                for start in range(0, len(words), max_words):
                    piece = words[start: start + max_words]
                    if len(piece) < min_words:
                        continue
                    text = " ".join(piece)
                    key = hashlib.blake2b(text.encode(), digest_size=12).digest()
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(text)
                    if len(out) >= limit:
                        return out
    return out


def fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
