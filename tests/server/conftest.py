"""One real Engine (the bundled SmolLM2, float32) and real uvicorn servers on 127.0.0.1 for every test.

The main server requires an API key; a second one shares the same engine with room for a
single request, to show 429. Limits are small so the whole folder stays fast.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from astrai.scheduler import Engine
from astrai.server import ServerConfig, create_app

MODEL = "smollm2-135m-instruct"
API_KEY = "test-key-123"
MAX_MODEL_LEN = 256
ENGINE_KWARGS: dict[str, Any] = dict(dtype="float32", max_num_seqs=32, max_num_batched_tokens=512,
                                     max_model_len=MAX_MODEL_LEN, page_size=16, num_pages=192)


@dataclass
class RunningServer:
    base_url: str
    app: Any
    server: uvicorn.Server

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


@contextmanager
def serve(app: Any) -> Iterator[RunningServer]:
    """Run `app` on a free loopback port in a background thread until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def wait_healthy(base_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(base_url + "/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became healthy")


def wait_idle(engine: Engine, timeout: float = 60.0) -> dict:
    """Engine stats once nothing is queued or running and the engine thread is parked (so every
    trace event of the finished work has been delivered)."""
    assert engine.wait_idle(timeout), f"engine still busy: {engine.stats()}"
    return engine.stats()


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    eng = Engine.from_pretrained(MODEL, **ENGINE_KWARGS)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def server(engine: Engine) -> Iterator[RunningServer]:
    config = ServerConfig(model=MODEL, api_key=API_KEY, max_num_seqs=32, max_queue=96,
                          max_body_bytes=256 * 1024)
    with serve(create_app(config, engine=engine)) as running:
        wait_healthy(running.base_url)
        yield running


@pytest.fixture(scope="session")
def tiny_server(engine: Engine) -> Iterator[RunningServer]:
    """Shares the engine but admits one request at a time (the next one gets 429); logs prompts."""
    config = ServerConfig(model=MODEL, max_num_seqs=1, max_queue=0, log_prompts=True)
    with serve(create_app(config, engine=engine)) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=120) as c:
        yield c


@pytest.fixture
def tokenizer(engine: Engine) -> Any:
    return engine.tokenizer


class TraceLog:
    """What the engine's per-step trace says: arrived request ids and finish reasons by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: list[str] = []
        self._finished: dict[str, str] = {}
        self._decode_steps: dict[str, int] = {}

    def on_step(self, event: Any) -> None:
        step = event.to_dict()
        with self._lock:
            self._arrived.extend(step["arrived"])
            for request_id in step["decode"]:
                self._decode_steps[request_id] = self._decode_steps.get(request_id, 0) + 1
            for f in step["finished"]:
                self._finished[f["request_id"]] = f["finish_reason"]

    def arrived(self) -> list[str]:
        with self._lock:
            return list(self._arrived)

    def finish_reason(self, request_id: str) -> str | None:
        with self._lock:
            return self._finished.get(request_id)

    def decode_steps(self, request_id: str) -> int:
        """How many decode steps the request has run (0 while queued or prefilling)."""
        with self._lock:
            return self._decode_steps.get(request_id, 0)

    def wait_decoding(self, prefix: str, timeout: float = 60.0) -> str:
        """The id of the first arrived request starting with `prefix`, once it has decoded a token."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request_id in self.arrived():
                if request_id.startswith(prefix) and self.decode_steps(request_id) > 0:
                    return request_id
            time.sleep(0.002)
        raise AssertionError(f"no request {prefix}* was seen decoding within {timeout} s")


@pytest.fixture
def trace_log(engine: Engine) -> Iterator[TraceLog]:
    """Subscribed to the shared engine for the duration of one test."""
    log = TraceLog()
    unsubscribe = engine.subscribe(log.on_step)
    yield log
    unsubscribe()


EMBEDDING_MODEL = "all-minilm-l6-v2"


RAG_MAX_MODEL_LEN = 1024


@pytest.fixture(scope="session")
def rag_engine(engine: Engine) -> Iterator[Engine]:
    """The shared model with room for RAG prompts (its own KV pool and prefix cache)."""
    eng = engine.with_settings(max_model_len=RAG_MAX_MODEL_LEN, num_pages=256)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def rag_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("astrai-data")


def retrieval_config(data_dir: Any) -> ServerConfig:
    return ServerConfig(model=MODEL, api_key=API_KEY, max_num_seqs=32, max_queue=96, max_body_bytes=256 * 1024,
                        embedding_model=EMBEDDING_MODEL, data_dir=str(data_dir), max_file_bytes=64 * 1024)


@pytest.fixture(scope="session")
def retrieval_server(rag_engine: Engine, rag_data_dir: Any) -> Iterator[RunningServer]:
    """A RAG-sized engine plus the bundled embedding model and a vector-store data folder; API key on."""
    with serve(create_app(retrieval_config(rag_data_dir), engine=rag_engine)) as running:
        wait_healthy(running.base_url)
        assert running.app.state.embedder.wait(120)
        assert running.app.state.rag.wait(120), running.app.state.rag.check_ready()
        yield running


@pytest.fixture(scope="session")
def rclient(retrieval_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=retrieval_server.v1, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture
def rhttp(retrieval_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=retrieval_server.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=120) as c:
        yield c
