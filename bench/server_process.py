"""Start and stop a real `astrai serve` subprocess on 127.0.0.1 and a free port."""

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


class AstraiServer:
    """Context manager: a server process, its base URL, and its log for error messages."""

    def __init__(self, model: str, extra_args: list[str], startup_timeout_s: float = 180.0):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [*astrai_cli(), "serve", "--model", model, "--host", "127.0.0.1",
                     "--port", str(self.port), *extra_args]
        self.startup_timeout_s = startup_timeout_s
        self.log = tempfile.NamedTemporaryFile("w+", prefix="astrai-serve-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> AstraiServer:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"astrai serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"astrai serve not healthy after {self.startup_timeout_s}s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
