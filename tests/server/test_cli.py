"""The `astrai` command as users run it: a real subprocess, real model load, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from astrai.scheduler import SamplingParams

MODEL = "smollm2-135m-instruct"
SMALL_ENGINE = ["--dtype", "float32", "--num-pages", "48", "--max-model-len", "128", "--max-num-seqs", "4"]
# The abort must cut this stream: finishing it inside the 2 s grace period would take 2,000 tok/s
# at batch 1 (~350 on a Zen 5; 600 tokens, the old length, fit in the grace period there).
LONG_STREAM_TOKENS = 4000


def astrai(*args: str) -> list[str]:
    return [sys.executable, "-m", "astrai.server.cli", *args]


@pytest.fixture
def served():
    """`astrai serve --port 0` with a key from the environment; yields (process, base URL)."""
    env = {**os.environ, "ASTRAI_API_KEY": "env-key"}
    proc = subprocess.Popen(astrai("serve", "--port", "0", "--shutdown-timeout", "2", *SMALL_ENGINE,
                                   "--max-model-len", str(LONG_STREAM_TOKENS + 16),
                                   "--num-pages", str(LONG_STREAM_TOKENS // 16 + 8)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, f"no URL printed; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_loads_in_background_and_stops_cleanly(served, stop_signal):
    proc, url = served
    first = httpx.get(url + "/health")
    assert first.status_code == 503  # the socket is up before the model
    assert first.json()["error"]["code"] == "model_loading"
    deadline = time.monotonic() + 120
    while httpx.get(url + "/health").status_code != 200:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)

    headers = {"Authorization": "Bearer env-key"}
    assert httpx.get(url + "/v1/models").status_code == 401
    reply = httpx.post(url + "/v1/completions", headers=headers, timeout=60,
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 3, "temperature": 0})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3

    # a long stream is in flight when the signal arrives: it keeps streaming through the grace
    # period, is then aborted with an error event, and the server exits 0
    lines: list[str] = []

    def long_stream() -> None:
        try:
            with httpx.stream("POST", url + "/v1/completions", headers=headers, timeout=60,
                              json={"model": MODEL, "prompt": "Hello", "max_tokens": LONG_STREAM_TOKENS,
                                    "ignore_eos": True, "stream": True}) as response:
                for line in response.iter_lines():
                    lines.append(line)
        except httpx.HTTPError:
            pass

    streamer = threading.Thread(target=long_stream)
    streamer.start()
    while not any(line.startswith("data: {") for line in lines):
        assert streamer.is_alive()
        time.sleep(0.05)
    def text_chunks() -> int:
        return sum(1 for line in lines if line.startswith("data: {") and '"text":' in line)

    streamed_before_signal = text_chunks()
    proc.send_signal(stop_signal)
    assert proc.wait(60) == 0
    streamer.join(30)
    assert not streamer.is_alive()
    events = [line for line in lines if line.startswith("data: ")]
    # the grace period: the stream kept going after the signal ...
    assert text_chunks() > streamed_before_signal, "nothing was streamed during the grace period"
    # ... and was then cut, not finished: it ended the OpenAI way, an error event saying why, then [DONE]
    assert events[-1] == "data: [DONE]"
    assert "shutting down" in events[-2] and '"code":"aborted"' in events[-2], events[-2]
    assert not any('"finish_reason":"length"' in e for e in events)
    assert text_chunks() < LONG_STREAM_TOKENS
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr
    assert re.search(r"cmpl-\w+ POST /v1/completions 200 .*prompt_tokens=\d+ completion_tokens=3", stderr)
    assert "Hello" not in stderr  # prompts are not logged unless --log-prompts


def test_generate_streams_the_engines_greedy_text(engine):
    prompt = "The capital of France is"
    result = subprocess.run(astrai("generate", "--max-tokens", "8", *SMALL_ENGINE, prompt),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = engine.generate([prompt], SamplingParams(max_tokens=8, temperature=0.0))[0].text
    assert result.stdout == expected + "\n"


def test_bad_model_path_fails_with_a_message(tmp_path):
    missing = str(tmp_path / "nope.gguf")
    served = subprocess.run(astrai("serve", "--port", "0", "--model", missing), capture_output=True, text=True,
                            timeout=120)
    assert served.returncode == 1 and "nope.gguf" in served.stderr
    assert "could not load model" in served.stderr


def test_cli_rejects_bad_options():
    result = subprocess.run(astrai("serve", "--port", "-3"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--port" in result.stderr


def test_scheduling_option_reaches_the_engine_and_rejects_unknown_modes():
    from astrai.server.cli import build_parser, engine_kwargs

    parse = build_parser().parse_args
    assert engine_kwargs(parse(["serve", "--scheduling", "static"]))["scheduling"] == "static"
    assert "scheduling" not in engine_kwargs(parse(["serve"]))  # the engine's default applies
    result = subprocess.run(astrai("serve", "--scheduling", "fifo"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--scheduling" in result.stderr


def test_serve_leaves_the_batch_size_to_the_engine(engine):
    from astrai.server import ServerConfig, create_app
    from astrai.server.cli import build_parser, engine_kwargs

    args = build_parser().parse_args(["serve"])
    assert args.max_num_seqs is None and "max_num_seqs" not in engine_kwargs(args)
    assert ServerConfig().max_num_seqs is None  # no copy of the engine's default here
    app = create_app(ServerConfig(max_queue=5), engine=engine)
    assert app.state.service.admission.limit == engine.max_num_seqs + 5  # read from the engine itself


def test_a_gguf_the_engine_cannot_run_fails_before_serving(tmp_path):
    """One line naming the file and the reason, from the header alone, before any socket opens."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(64))
    served = subprocess.run(astrai("serve", "--port", "0", "--model", str(bad)), capture_output=True, text=True,
                            timeout=120)
    assert served.returncode == 1 and "Traceback" not in served.stderr
    lines = [line for line in served.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.gguf" in lines[0] and "bad magic: not a GGUF file" in lines[0]
