"""What rendering needs from the operating system, found without importing Manim.

Manim draws through cairo and pango. PyPI has no Linux wheels of its `manimpango` and `pycairo`
dependencies, so `pip install 'astrai-promo[render]'` builds them from source: that needs a C
compiler, this Python's headers, pkg-config and the cairo and pango development files. This
module finds which of those are missing here and names the Debian/Ubuntu packages that provide
them, so a user reads one sentence instead of a compiler traceback from inside pip.

Standard library only, and no relative imports: the workspace's dev-environment installer
(scripts/system_packages.py) runs this file by path before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Missing:
    """One missing build requirement and the Debian package that provides it (None: no such package)."""

    what: str
    debian_package: str | None


def _c_compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _pkg_config() -> str | None:
    return shutil.which("pkg-config") or shutil.which("pkgconf")


def _compiles(compiler: str, source: str, *flags: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="astrai-check-") as folder:
        path = Path(folder) / "check.c"
        path.write_text(source)
        result = subprocess.run([compiler, "-fsyntax-only", *flags, str(path)], capture_output=True, timeout=60)
        return result.returncode == 0


def _python_headers_package() -> str | None:
    """Debian's own Pythons live under /usr and take their headers from pythonX.Y-dev."""
    if sys.base_prefix == "/usr":
        return f"python{sys.version_info.major}.{sys.version_info.minor}-dev"
    return None


def _dpkg_installed(package: str) -> bool | None:
    """Whether dpkg knows `package` as installed; None where there is no dpkg to ask."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def _library(pkg_config: str | None, module: str, what: str, package: str) -> Missing | None:
    if pkg_config is not None:
        found = subprocess.run([pkg_config, "--exists", module], capture_output=True).returncode == 0
    else:  # cannot ask pkg-config: ask dpkg, or count it missing (installing it again is harmless)
        found = bool(_dpkg_installed(package))
    return None if found else Missing(what, package)


def missing_build_requirements() -> list[Missing]:
    """What `pip install manim` needs to build manimpango and pycairo, and lacks on this machine."""
    missing: list[Missing] = []
    compiler = _c_compiler()
    include = Path(sysconfig.get_paths()["include"])
    if compiler is None:
        missing.append(Missing("a C compiler", "gcc"))
    elif not _compiles(compiler, "#include <stdio.h>\nint main(void) { return 0; }\n"):
        missing.append(Missing("the C library headers", "libc6-dev"))
    if not (include / "Python.h").is_file():
        missing.append(Missing(f"the headers of this Python ({include / 'Python.h'})", _python_headers_package()))
    pkg_config = _pkg_config()
    if pkg_config is None:
        missing.append(Missing("pkg-config", "pkg-config"))
    for module, what, package in (("cairo", "cairo's development files", "libcairo2-dev"),
                                  ("pangocairo", "pango's development files", "libpango1.0-dev")):
        gap = _library(pkg_config, module, what, package)
        if gap is not None:
            missing.append(gap)
    return missing


def debian_packages(missing: Sequence[Missing]) -> list[str]:
    """The Debian packages to install for `missing`, each once, in a stable order."""
    return sorted({m.debian_package for m in missing if m.debian_package})


def install_command(packages: Sequence[str]) -> str:
    prefix = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{prefix}apt-get install -y {' '.join(packages)}"


def summary(missing: Sequence[Missing]) -> str:
    return "; ".join(m.what for m in missing)


def describe(missing: Sequence[Missing]) -> str:
    """What is missing and the command that installs it, for a user's error message."""
    text = f"missing here: {summary(missing)}."
    packages = debian_packages(missing)
    if packages:
        text += f" On Debian/Ubuntu: {install_command(packages)}"
    unnamed = [m.what for m in missing if not m.debian_package]
    if unnamed:
        text += (f" No Debian package provides {'; '.join(unnamed)}: install this Python's development headers"
                 " or use a Python that has them.")
    return text
