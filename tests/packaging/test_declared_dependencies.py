"""What each package imports, it declares; and all of them agree on the torch they need."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
NAMES = sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").is_file())


def _project(name: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]


def _declared(name: str) -> dict[str, Requirement]:
    project = _project(name)
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts += extra
    return {canonicalize_name(Requirement(t).name): Requirement(t) for t in texts}


def _imports(name: str) -> set[str]:
    """Top-level third-party modules and astrai.<package> subpackages imported by the package's code."""
    found: set[str] = set()
    for path in (PACKAGES / name / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] in sys.stdlib_module_names or parts[0] == "__future__":
                    continue
                found.add(".".join(parts[:2]) if parts[0] == "astrai" else parts[0])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_import_is_a_declared_dependency(name):
    declared = _declared(name)
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for module in sorted(_imports(name)):
        if module.startswith("astrai."):
            owner = "astrai-" + module.split(".")[1]
            if owner != name and owner not in declared:
                undeclared.append(f"{module} (needs {owner})")
            continue
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert dists, f"{name} imports {module}, which no installed distribution provides"
        if not dists & set(declared):
            undeclared.append(f"{module} (from {', '.join(sorted(dists))})")
    assert not undeclared, f"{name} imports what it does not declare: {undeclared}"


# DESIGN.md's dependency diagram (an arrow means "imports"): the astrai packages each one may import.
DESIGN_ARROWS = {
    "astrai-model": set(),
    "astrai-cache": set(),
    "astrai-scheduler": {"astrai.model", "astrai.cache"},
    "astrai-retrieval": {"astrai.model", "astrai.cache"},  # the encoder; the count-min sketch
    "astrai-server": {"astrai.scheduler", "astrai.retrieval"},  # retrieval only through the rag extra
    "astrai-promo": {"astrai.scheduler"},
}


def test_the_diagram_names_every_package():
    assert set(DESIGN_ARROWS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_imports_follow_the_design_direction(name):
    """No package imports one the diagram does not point it at (the server never reaches
    astrai.model itself: the encoder comes through astrai.retrieval, the rest through the scheduler)."""
    own = "astrai." + name.removeprefix("astrai-")
    imported = {m for m in _imports(name) if m.startswith("astrai.") and m != own}
    assert imported <= DESIGN_ARROWS[name], f"{name} imports {sorted(imported - DESIGN_ARROWS[name])} against DESIGN.md"


def test_torch_floor_is_the_same_everywhere():
    floors = {}
    for name in NAMES:
        torch = _declared(name).get("torch")
        if torch is not None:
            floors[name] = str(torch.specifier)
    assert set(floors) >= {"astrai-model", "astrai-cache", "astrai-scheduler"}
    assert len(set(floors.values())) == 1, f"the packages disagree on torch: {floors}"


@pytest.mark.parametrize("name", NAMES)
def test_every_dependency_has_a_floor(name):
    """Floors are what `hatch run dev:floors` installs and tests; an unbounded one cannot be tested."""
    unbounded = [str(r) for r in _declared(name).values() if not any(s.operator == ">=" for s in r.specifier)]
    assert not unbounded, f"{name}: dependencies without a lower bound: {unbounded}"
