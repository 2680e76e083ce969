"""Start and stop real server subprocesses (`astrai serve`, `llama-server`) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.peers import llama_tool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def astrai_cli() -> list[str]:
    """The `astrai` console script next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("astrai")
    if local.exists():
        return [str(local)]
    found = shutil.which("astrai")
    if found:
        return [found]
    raise RuntimeError("the `astrai` command is not installed (astrai-server)")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process (VmRSS), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ServerProcess:
    """Context manager: a server process, its base URL, its log (for error messages), its RSS."""

    name = "server"

    def __init__(self, args: list[str], port: int, startup_timeout_s: float = 300.0):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.args = args
        self.startup_timeout_s = startup_timeout_s
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"{self.name}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None
        self.load_seconds: float | None = None

    def __enter__(self) -> ServerProcess:
        start = time.perf_counter()
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    self.load_seconds = time.perf_counter() - start
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise RuntimeError(f"{self.name} not healthy after {self.startup_timeout_s}s: {self.tail()}")

    def model_id(self) -> str:
        return httpx.get(f"{self.base_url}/v1/models", timeout=10.0).json()["data"][0]["id"]

    def rss(self) -> int | None:
        return rss_bytes(self.proc.pid) if self.proc is not None else None

    def tail(self, chars: int = 2000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class AstraiServer(ServerProcess):
    """`astrai serve` with its defaults plus `extra_args` (the bench's --astrai-args)."""

    name = "astrai-serve"

    def __init__(self, model: str, extra_args: list[str]):
        port = free_port()
        super().__init__([*astrai_cli(), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning", *extra_args], port)


class LlamaServer(ServerProcess):
    """`llama-server -np N`: N parallel slots with continuous batching (its default), each slot
    given `slot_context` tokens of KV, the same thread count as AstrAI."""

    name = "llama-server"

    def __init__(self, model: str, parallel: int, slot_context: int, threads: int, extra_args: list[str]):
        port = free_port()
        self.parallel = parallel
        super().__init__([str(llama_tool("llama-server")), "-m", model, "--host", "127.0.0.1", "--port", str(port),
                          "-np", str(parallel), "-c", str(parallel * slot_context), "-t", str(threads),
                          "-tb", str(threads), "--no-webui", *extra_args], port)
