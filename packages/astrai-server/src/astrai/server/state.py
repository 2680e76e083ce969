"""The engine behind the server: loaded in the background, plus admission control.

The HTTP socket opens at once and the model loads in a thread, so `/health` can answer 503
while loading and 200 after. Admission counts the requests this server has in the engine and
answers 429 when the batch plus the waiting queue are full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from astrai.scheduler import EngineClient
from astrai.server.errors import APIError

logger = logging.getLogger("astrai.server")


class EngineHolder:
    """Holds the Engine once it exists; `get()` raises 503 until then."""

    def __init__(self, factory: Callable[[], EngineClient] | None = None, engine: EngineClient | None = None,
                 owns_engine: bool = True,
                 on_failure: Callable[[str], None] | None = None, description: str = "model") -> None:
        self._factory = factory
        self._on_failure = on_failure
        self._description = description
        self._loaded = threading.Event()
        self._engine = engine
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self.owns_engine = owns_engine and engine is None
        self.load_seconds: float | None = 0.0 if engine is not None else None

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def error(self) -> str | None:
        return self._error

    def start_loading(self) -> None:
        if self._engine is not None or self._factory is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._load, name="astrai-model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        start = time.perf_counter()
        logger.info("loading %s ...", self._description)
        ticker = threading.Thread(target=self._progress, args=(start,), name="astrai-load-progress", daemon=True)
        ticker.start()
        try:
            engine = self._factory()
        except Exception as exc:  # reported by /health and every request
            self._error = f"{type(exc).__name__}: {exc}"
            self._loaded.set()
            logger.error("%s failed to load: %s", self._description, self._error)
            if self._on_failure is not None:
                self._on_failure(self._error)
            return
        self.load_seconds = time.perf_counter() - start
        self._engine = engine
        self._loaded.set()
        info = engine.describe()
        logger.info("%s ready in %.1fs: context %d tokens, %d KV pages of %d tokens, weights %s, %s forward, "
                    "kernels %s", self._description, self.load_seconds, info.max_model_len, info.num_pages,
                    info.page_size, info.weights, info.forward, info.kernels)

    def _progress(self, start: float) -> None:
        """A line every few seconds so a slow load does not look like a hang."""
        while not self._loaded.wait(5.0):
            logger.info("still loading %s (%.0fs) ...", self._description, time.perf_counter() - start)

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def get(self) -> EngineClient:
        if self._engine is not None:
            return self._engine
        if self._error is not None:
            raise APIError(503, f"The model failed to load: {self._error}", code="model_load_failed")
        raise APIError(503, "The model is still loading; retry shortly", code="model_loading",
                       headers={"Retry-After": "1"})

    def peek(self) -> EngineClient | None:
        return self._engine

    def shutdown(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._engine is not None and self.owns_engine:
            self._engine.shutdown()


class Admission:
    """Counts requests in flight; refuses with 429 past `limit`. Used from the event loop only.

    The limit is read when asked, because it may depend on the engine, which loads after the
    server starts.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.in_flight = 0

    @property
    def limit(self) -> int:
        return self._limit()

    def acquire(self, count: int = 1) -> None:
        limit = self.limit
        if self.in_flight + count > limit:
            raise APIError(429, f"Server is at capacity ({self.in_flight} requests in flight, limit {limit}); "
                                "retry later", code="queue_full", headers={"Retry-After": "1"})
        self.in_flight += count

    def release(self, count: int = 1) -> None:
        self.in_flight = max(0, self.in_flight - count)
