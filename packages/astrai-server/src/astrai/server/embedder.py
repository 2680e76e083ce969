"""The served embedding model: loaded in the background, fed through one batching queue.

Part of the `astrai-server[rag]` extra: the encoder is astrai.retrieval's (astrai-model's
`SentenceEncoder`, reached through retrieval as DESIGN.md draws it), so this module is imported
only when that extra is installed (`retrieval_gate.make_embedder`).

Requests (from `/v1/embeddings`, vector-store ingestion and search) put their checked token-id
lists on the queue and await a future. One worker task takes everything that arrived within
`window_s` of the first item (up to `max_batch_inputs`), runs a single `encode` off the event
loop thread, and answers each caller with its rows. While a forward runs, new requests pile up
and go together in the next one, so concurrent callers share padded forwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astrai.retrieval import EncoderInputError, SentenceEncoder, load_encoder
from astrai.server.errors import APIError, bad_request
from prometheus_client import CollectorRegistry, Counter

logger = logging.getLogger("astrai.server")


@dataclass
class _Job:
    inputs: list[list[int]]
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop = field(repr=False)


class Embedder:
    """One encoder (`load_encoder(source)`) served under `name`; `start()` loads it in a thread."""

    def __init__(self, name: str, source: str, *, registry: CollectorRegistry | None = None,
                 window_s: float = 0.004, max_batch_inputs: int = 256) -> None:
        self.name = name
        self.source = source
        self.window_s = window_s
        self.max_batch_inputs = max_batch_inputs
        self._encoder: SentenceEncoder | None = None
        self._error: str | None = None
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = Counter("astrai:embedding_batches", "Forwards of the batching queue (one or more "
                               "requests each).", ["model_name"], registry=registry).labels(name)
        self.inputs = Counter("astrai:embedding_inputs", "Texts or token lists embedded.", ["model_name"],
                              registry=registry).labels(name)

    # --- loading -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="astrai-embedder-loader", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            self._encoder = load_encoder(self.source)
        except Exception as exc:  # reported by every embeddings request
            self._error = f"{type(exc).__name__}: {exc}"
            logger.error("embedding model %r failed to load: %s", self.source, self._error)
        else:
            enc = self._encoder
            logger.info("embedding model %r ready in %.1fs: %d dimensions, %d-token limit, %s pooling", self.name,
                        time.perf_counter() - start, enc.dimension, enc.max_seq_length, enc.pipeline.pooling)
        self._loaded.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._loaded.wait(timeout)
        return self._encoder is not None

    def encoder(self) -> SentenceEncoder:
        if self._encoder is not None:
            return self._encoder
        if self._error is not None:
            raise APIError(503, f"The embedding model failed to load: {self._error}", code="model_load_failed")
        raise APIError(503, "The embedding model is still loading; retry shortly", code="model_loading",
                       headers={"Retry-After": "1"})

    # --- requests ----------------------------------------------------------------------------

    def token_ids(self, inputs: Sequence[str | Sequence[int]], param: str = "input") -> list[list[int]]:
        """Tokenize and check every input: a 400 names the first one that is empty, too long or bad."""
        encoder = self.encoder()
        texts = [x for x in inputs if isinstance(x, str)]
        tokenized = iter(encoder.tokenize(texts)) if texts else iter(())
        ids = [next(tokenized) if isinstance(x, str) else list(x) for x in inputs]
        try:
            encoder.check(ids)
        except EncoderInputError as exc:
            where = param if len(inputs) == 1 else f"{param}.{exc.index}"
            n = len(ids[exc.index])
            if n > encoder.max_seq_length:
                raise bad_request(f"{where}: this model's maximum input length is {encoder.max_seq_length} tokens, "
                                  f"but the input has {n} tokens; shorten it", where,
                                  code="context_length_exceeded") from None
            reason = "must not be empty" if n == 0 else str(exc).split(": ", 1)[-1]
            raise bad_request(f"{where}: {reason}", where) from None
        return ids

    def truncated_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of texts cut to the model's limit (keeping [SEP]): what a passage's vector sees."""
        encoder = self.encoder()
        limit = encoder.max_seq_length
        return [ids if len(ids) <= limit else [*ids[: limit - 1], ids[-1]] for ids in encoder.tokenize(texts)]

    async def embed(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embeddings float32 [len(token_ids), dim] of checked inputs, computed in a shared batch."""
        self.encoder()
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="astrai-embedding-batcher")
        job = _Job(token_ids, loop.create_future(), loop)
        await self._queue.put(job)
        return await job.future

    async def _run(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            jobs = [await queue.get()]
            deadline = time.monotonic() + self.window_s
            count = len(jobs[0].inputs)
            while count < self.max_batch_inputs:
                remaining = deadline - time.monotonic()
                try:
                    job = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                jobs.append(job)
                count += len(job.inputs)
            jobs = [j for j in jobs if not j.future.done()]  # a caller that went away
            if not jobs:
                continue
            flat = [ids for j in jobs for ids in j.inputs]
            try:
                vectors = await asyncio.to_thread(self._encode, flat)
            except Exception as exc:  # answered to every caller in this batch, the worker lives on
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            self.batches.inc()
            self.inputs.inc(len(flat))
            start = 0
            for j in jobs:
                if not j.future.done():
                    j.future.set_result(vectors[start : start + len(j.inputs)])
                start += len(j.inputs)

    def _encode(self, token_ids: list[list[int]]) -> np.ndarray:
        return self.encoder().encode(token_ids).numpy()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
