"""docs/INTERFACES.md names every package's public API exactly: each `from astrai.X import (...)`
block there must list the package's `__all__`, no more and no less, so the page cannot drift."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "INTERFACES.md"
PACKAGES = ("astrai.model", "astrai.cache", "astrai.scheduler", "astrai.server", "astrai.promo")


def documented_names(package: str) -> set[str]:
    """The names imported from `package` in the python code blocks of INTERFACES.md."""
    names: set[str] = set()
    text = DOC.read_text(encoding="utf-8")
    for statement in re.findall(r"^from astrai\.\w+ import (?:\([^)]*\)|[^\n]*)", text, flags=re.M):
        node = ast.parse(statement).body[0]
        assert isinstance(node, ast.ImportFrom)
        if node.module == package:
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_interfaces_doc_lists_exactly_the_public_api(package):
    exported = set(importlib.import_module(package).__all__)
    documented = documented_names(package)
    assert documented, f"docs/INTERFACES.md has no `from {package} import (...)` block"
    assert not exported - documented, f"exported by {package} but missing in INTERFACES.md: {sorted(exported - documented)}"
    assert not documented - exported, f"in INTERFACES.md but not exported by {package}: {sorted(documented - exported)}"
