"""The system packages the dev environment needs, checked (and installed) before pip runs.

hatch runs this as the dev environment's pre-install command: pip is about to build Manim's
manimpango and pycairo from source (PyPI has no Linux wheels of them), and AstrAI's native CPU
kernels compile with g++ on first use. Missing pieces are named by their Debian/Ubuntu package.

    python scripts/system_packages.py            # check; exit 1 naming what is missing
    python scripts/system_packages.py --install  # as root on Debian/Ubuntu: apt-get install them

Where it cannot install (not root, no apt-get) it stops at once with the exact packages and the
command that installs them, instead of letting pip fail later inside a compiler. Standard library
only: nothing is installed yet when it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PROMO_SYSTEM = ROOT / "packages" / "astrai-promo" / "src" / "astrai" / "promo" / "system.py"
WHY = ("pip builds Manim's manimpango and pycairo, for astrai-promo[render], from source against them; "
       "g++ builds AstrAI's native CPU kernels")


def _promo_system() -> ModuleType:
    """astrai-promo's own check (one list of what Manim builds against), loaded by path."""
    spec = importlib.util.spec_from_file_location("astrai_promo_system", PROMO_SYSTEM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


def missing_requirements(system: ModuleType) -> list:
    missing = system.missing_build_requirements()
    if not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")):
        missing.append(system.Missing("a C++ compiler (AstrAI's native CPU kernels)", "g++"))
    return missing


def _can_install() -> str | None:
    """Why apt-get cannot be used here, or None if it can."""
    if shutil.which("apt-get") is None:
        return "this is not a Debian/Ubuntu system (no apt-get)"
    if os.geteuid() != 0:
        return "installing needs root and this runs as an unprivileged user"
    return None


def _apt_install(packages: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing Debian packages for the dev environment: {' '.join(packages)}", flush=True)
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            print(f"error: `{' '.join(command)}` failed:\n{result.stderr.strip()[-2000:]}", file=sys.stderr)
            return False
    return True


def stop(system: ModuleType, missing: list, reason: str) -> int:
    print(f"error: the dev environment needs system packages that are missing: {system.summary(missing)}.\n"
          f"({WHY}.)\nThey were not installed automatically: {reason}.", file=sys.stderr)
    packages = system.debian_packages(missing)
    if packages:
        print(f"Install them (Debian/Ubuntu), then run the same command again:\n"
              f"    {system.install_command(packages)}", file=sys.stderr)
    unnamed = [m.what for m in missing if not m.debian_package]
    if unnamed:
        print(f"No Debian package provides {'; '.join(unnamed)}: install this Python's development headers, "
              "or run hatch with a Python that has them.", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install what is missing (root, apt-get)")
    args = parser.parse_args(argv)
    system = _promo_system()
    missing = missing_requirements(system)
    if not missing:
        print("system packages: everything the dev environment builds against is installed")
        return 0
    unnamed = [m.what for m in missing if not m.debian_package]
    if not args.install:
        reason: str | None = "run with --install to install them"
    elif unnamed:
        reason = "no Debian package provides " + "; ".join(unnamed)
    else:
        reason = _can_install()
    if reason is not None:
        return stop(system, missing, reason)
    if not _apt_install(system.debian_packages(missing)):
        return stop(system, missing, "apt-get failed (its error is above)")
    still = missing_requirements(system)
    if still:
        return stop(system, still, "they are still missing after apt-get install")
    print("system packages: installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
