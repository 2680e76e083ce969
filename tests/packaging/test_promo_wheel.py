"""astrai-promo's wheel installs alone: `record` works without Manim, `render` then names the
extra to install, and with `astrai-promo[render]` it renders a real poster."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image


def test_promo_wheel_records_then_renders_with_its_extra(make_venv, tiny_llama, tmp_path):
    directory, _ = tiny_llama
    venv = make_venv("astrai-promo")
    venv.check_consistent()
    assert {"manim", "manimpango", "pycairo"} & set(venv.versions()) == set()
    promo = venv.bin("astrai-promo")
    trace = tmp_path / "trace.json"
    venv.run(promo, "record", "--out", trace, "--model", directory, "--workload", "small", "--quiet", timeout=600)
    assert json.loads(trace.read_text())["steps"]

    render = [promo, "render", "--trace", trace, "--scene", "architecture", "--quality", "low", "--out",
              tmp_path / "media", "--max-seconds", "2", "--quiet"]
    without = venv.run(*render, check=False)
    assert without.returncode == 2
    assert "rendering needs Manim, which is not installed" in without.stderr
    assert "pip install 'astrai-promo[render]'" in without.stderr
    assert "Traceback" not in without.stderr
    # where cairo and pango's development files are missing too, the same message names their packages
    hidden = tmp_path / "no-pkg-config-files"
    hidden.mkdir()
    bare = venv.run(*render, check=False, PKG_CONFIG_LIBDIR=str(hidden), PKG_CONFIG_PATH="")
    assert bare.returncode == 2
    assert "missing here: cairo's development files; pango's development files." in bare.stderr
    assert "apt-get install -y libcairo2-dev libpango1.0-dev" in bare.stderr

    venv.add_extra("render")
    venv.check_consistent()
    venv.run(*render, timeout=600)
    poster = np.asarray(Image.open(tmp_path / "media" / "architecture.png").convert("RGB"), dtype=np.float32)
    assert poster.shape == (480, 854, 3) and poster.std() > 10.0
    assert (tmp_path / "media" / "architecture.mp4").stat().st_size > 10_000
