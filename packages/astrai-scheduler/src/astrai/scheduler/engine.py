"""The Engine: a background thread that batches requests continuously over a paged KV cache.

Callers in any thread (or asyncio loop) submit requests; the engine thread loops
Cleanup -> Refill -> Prefill -> Decode with one ragged model forward per step, and hands
outputs back through a per-request sink (a queue.Queue, or an asyncio.Queue fed with
`call_soon_threadsafe`). The thread sleeps on a condition variable when there is no work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from astrai.cache import KVCacheManager
from astrai.model import load_model, locate_model

from .errors import EngineError, PromptTooLongError
from .memory import default_num_pages, resolve_device, resolve_dtype
from .outputs import RequestOutput
from .params import SamplingParams
from .request import Request, Sink
from .runner import ModelRunner
from .sampler import Sampler
from .scheduler import Scheduler, StepPlan
from .stats import EngineCounters
from .trace import TraceEvent
from .tracing import StepTracer

log = logging.getLogger("astrai.scheduler")

Prompt = str | Sequence[int]
TraceCallback = Callable[[TraceEvent], None]


class Engine:
    """Continuous-batching inference over one model. Thread-safe; use as a context manager."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 2048,
        max_model_len: int | None = None,
        page_size: int = 16,
        num_pages: int | None = None,
        enable_prefix_cache: bool = True,
        scheduling: str = "continuous",
        seed: int | None = None,
    ) -> None:
        _check_positive("max_num_seqs", max_num_seqs)
        _check_positive("max_num_batched_tokens", max_num_batched_tokens)
        _check_positive("page_size", page_size)
        if max_model_len is not None:
            _check_positive("max_model_len", max_model_len)
        if num_pages is not None:
            _check_positive("num_pages", num_pages)
        if scheduling not in ("continuous", "static"):
            raise ValueError(f"scheduling must be 'continuous' or 'static', got {scheduling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.scheduling = scheduling
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_prefix_cache = enable_prefix_cache
        cfg = self.config
        if num_pages is None:
            num_pages = default_num_pages(cfg, model.dtype, model.device, page_size, max_num_seqs)
        self.kv = KVCacheManager(
            cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, page_size=page_size, num_pages=num_pages,
            dtype=model.dtype, device=model.device, enable_prefix_cache=enable_prefix_cache,
        )
        limit = max_model_len if max_model_len is not None else cfg.max_position_embeddings
        self.max_model_len = min(limit, self.kv.capacity_tokens)
        if max_model_len is not None and max_model_len > self.max_model_len:
            log.warning("max_model_len %d exceeds the KV pool (%d tokens); capped", max_model_len, self.max_model_len)
        self._eos = sorted(set(tokenizer.eos_token_ids) | set(cfg.eos_token_ids or ()))
        self._vocab_size = cfg.vocab_size
        self.scheduler = Scheduler(
            self.kv, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_cache=enable_prefix_cache, static=scheduling == "static",
        )
        self.runner = ModelRunner(model, self.kv, Sampler(seed))
        self.counters = EngineCounters()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # wakes the engine thread
        self._idle_cond = threading.Condition(self._lock)  # wakes wait_idle() callers
        self._idle = False
        self._inbox: list[Request] = []
        self._aborts: list[str] = []
        self._live: set[str] = set()
        self._closed = False
        self._ids = itertools.count()
        self._arrivals = itertools.count()
        self._tracer = StepTracer(self.kv)
        self._thread = threading.Thread(target=self._run, name="astrai-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> Engine:
        """Load a built-in name, an HF model directory or a .gguf file and start an engine."""
        dev = resolve_device(device)
        model_obj, tokenizer = load_model(model, dtype=resolve_dtype(dtype), device=dev)
        model_obj.pack_for_cpu()  # bf16 on an AMX/AVX512-BF16 CPU: pre-packed matmuls; else a no-op
        return cls(model_obj, tokenizer, **kwargs)

    @staticmethod
    def locate_model(model: str) -> Path:
        """Where `from_pretrained(model)` would load from, checked without loading: raises
        ModelLoadError at once for a missing bundled-model package or a path that does not exist."""
        return locate_model(model)

    # --- public API ----------------------------------------------------------------------

    def add_request(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        priority: int = 0,
        *,
        sink: Sink | None = None,
        stream: bool = False,
    ) -> str:
        """Queue a request; outputs go to `sink` (deltas if `stream`, else one final output)."""
        req = self._make_request(prompt, params, request_id, priority, stream)
        req.sink = sink
        self._submit([req])
        return req.request_id

    def abort(self, request_id: str) -> None:
        """Stop a request; it finishes with finish_reason "abort" and frees its pages next step."""
        with self._cond:
            if request_id in self._live:
                self._aborts.append(request_id)
                self._cond.notify()

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run prompts to completion; outputs come back in input order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if isinstance(params, Sequence):
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
            plist = list(params)
        else:
            plist = [params] * len(prompts)
        reqs = [self._make_request(p, sp, None, 0, False) for p, sp in zip(prompts, plist, strict=True)]
        results: queue.Queue[RequestOutput] = queue.Queue()
        for r in reqs:
            r.sink = results.put
        self._submit(reqs)
        done: dict[str, RequestOutput] = {}
        try:
            while len(done) < len(reqs):
                out = results.get()
                done[out.request_id] = out
        except BaseException:
            for r in reqs:
                if r.request_id not in done:
                    self.abort(r.request_id)
            raise
        return [done[r.request_id] for r in reqs]

    def stream(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        priority: int = 0,
    ) -> Iterator[RequestOutput]:
        """Yield RequestOutput deltas; leaving the loop early aborts the request."""
        req = self._make_request(prompt, params, request_id, priority, True)
        outputs: queue.Queue[RequestOutput] = queue.Queue()
        req.sink = outputs.put
        self._submit([req])
        return self._iterate(req.request_id, outputs)

    def _iterate(self, request_id: str, outputs: queue.Queue[RequestOutput]) -> Iterator[RequestOutput]:
        finished = False
        try:
            while not finished:
                out = outputs.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.abort(request_id)

    def generate_async(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[RequestOutput]:
        """Async deltas for use inside a running event loop; cancelling aborts the request.

        Bad input raises here, synchronously; the request is submitted on first iteration.
        """
        req = self._make_request(prompt, params, request_id, priority, True)
        return self._aiterate(req)

    async def _aiterate(self, req: Request) -> AsyncIterator[RequestOutput]:
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def sink(out: RequestOutput) -> None:
            loop.call_soon_threadsafe(outputs.put_nowait, out)

        req.sink = sink
        self._submit([req])
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.abort(req.request_id)

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams | None = None) -> RequestOutput:
        """Apply the model's chat template and generate one reply."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return self.generate([list(ids)], params)[0]

    def subscribe(self, callback: TraceCallback) -> Callable[[], None]:
        """Receive one TraceEvent per step (on the engine thread); returns an unsubscribe function."""
        tracer = self._tracer
        with self._cond:
            tracer.subscribers = (*tracer.subscribers, callback)

        def unsubscribe() -> None:
            with self._cond:
                tracer.subscribers = tuple(s for s in tracer.subscribers if s is not callback)

        return unsubscribe

    def stats(self) -> dict[str, Any]:
        """A snapshot for metrics endpoints (read without stopping the engine)."""
        kv = self.kv
        free = kv.num_free_pages()
        c = self.counters
        return {
            "num_running": len(self.scheduler.running),
            "num_waiting": len(self.scheduler.waiting) + len(self._inbox),
            "kv_cache_usage": 1.0 - (free + kv.num_evictable_pages()) / kv.num_pages,
            "prompt_tokens_total": c.prompt_tokens_total,
            "generation_tokens_total": c.generation_tokens_total,
            "prefix_cache_queries": self.scheduler.prefix_queries,
            "prefix_cache_hits": self.scheduler.prefix_hits,
            "num_preemptions_total": self.scheduler.num_preemptions,
            "num_pages": kv.num_pages,
            "num_free_pages": free,
            "num_cached_pages": kv.num_cached_pages(),
            "page_size": kv.page_size,
            "steps": c.steps,
            "requests_finished_total": dict(c.finished_by_reason),
        }

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (and the engine thread is parked).

        Returns False on timeout. Handy for tests and graceful drains.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not (self._idle and not self._inbox and not self._aborts) and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle_cond.wait(left)
            return True

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Abort whatever is in flight and stop the engine thread. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._closed

    # --- request intake (caller threads) -------------------------------------------------

    def _make_request(
        self, prompt: Prompt, params: SamplingParams | None, request_id: str | None, priority: int, stream: bool
    ) -> Request:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        ids = self._tokenize(prompt)
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(len(ids), self.max_model_len)
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        detok = None
        if stream or params.stop_strings:
            detok = self.tokenizer.incremental(skip_special_tokens=params.skip_special_tokens)
        if request_id is None:
            with self._lock:
                request_id = f"req-{next(self._ids)}"
                while request_id in self._live:  # a caller chose this name for its own request
                    request_id = f"req-{next(self._ids)}"
        elif not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        return Request(
            request_id, ids, params, max_tokens=max_tokens, eos_token_ids=self._eos, priority=priority,
            stream=stream, detokenizer=detok, device=self.model.device,
        )

    def _tokenize(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        elif isinstance(prompt, Sequence) or isinstance(prompt, torch.Tensor):
            ids = [int(t) for t in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
            bad = [t for t in ids if not 0 <= t < self._vocab_size]
            if bad:
                raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self._vocab_size})")
        else:
            raise ValueError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("prompt is empty")
        return ids

    def _submit(self, reqs: list[Request]) -> None:
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise EngineError("the engine has been shut down")
            ids = [r.request_id for r in reqs]
            dup = next((i for i in ids if i in self._live), None)
            if dup is not None or len(set(ids)) != len(ids):
                raise ValueError(f"request_id {dup or ids} is already in use")
            for r in reqs:
                r.arrival_seq = next(self._arrivals)
                self._live.add(r.request_id)
            self._inbox.extend(reqs)
            self._cond.notify()

    # --- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._inbox or self._aborts or self._closed or self.scheduler.has_work()):
                        self._idle = True
                        self._idle_cond.notify_all()
                        self._cond.wait()
                    self._idle = False
                    if self._closed:
                        break
                    arrivals, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                self._step(arrivals, aborts)
        except BaseException as exc:  # a bug: fail everyone rather than hang callers
            log.exception("engine thread crashed")
            self._drain(f"engine thread crashed: {type(exc).__name__}: {exc}")
            raise
        self._drain(None)

    def _drain(self, error: str | None) -> None:
        """Finish every request still in the engine (shutdown or crash)."""
        with self._cond:
            self._closed = True
            pending, self._inbox = self._inbox, []
        for req in pending:
            self._finish(req, "error" if error else "abort", error)
        for req in list(self.scheduler.waiting):
            self.scheduler.remove(req.request_id)
            self._finish(req, "error" if error else "abort", error)
        for req in list(self.scheduler.running):
            self.scheduler.remove(req.request_id)
            self._finish(req, "error" if error else "abort", error)
        with self._lock:
            self._idle = True
            self._idle_cond.notify_all()

    def _step(self, arrivals: list[Request], aborts: list[str]) -> None:
        tracing = self._tracer.active
        if tracing:
            self._tracer.begin_step()
        t0 = time.perf_counter()
        sched = self.scheduler
        finished: list[Request] = []

        # Cleanup: aborts (finished requests were released at the end of the previous step).
        for rid in aborts:
            req = sched.remove(rid)
            if req is None:
                req = next((r for r in arrivals if r.request_id == rid), None)
                if req is None:
                    continue
                arrivals.remove(req)
            self._finish(req, "abort")
            finished.append(req)
        t1 = time.perf_counter()

        # Refill: new arrivals join the queue; the scheduler picks this step's work.
        for req in arrivals:
            sched.add(req)
        plan = sched.schedule()
        now = time.monotonic()
        for req in plan.admitted:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
                self.counters.prompt_tokens_total += len(req.prompt_token_ids)
        for req, message in plan.failed:
            self._finish(req, "error", message)
            finished.append(req)
        t2 = time.perf_counter()

        # Prefill + decode: one ragged forward for every scheduled chunk, then sampling.
        t3 = t4 = t2
        if plan.chunks:
            try:
                batch = self.runner.build_batch(plan.chunks)
                t3 = time.perf_counter()
                logits = self.runner.forward(batch)
                t4 = time.perf_counter()
                result = self.runner.sample(logits, plan.chunks)
                self._apply(plan, result, finished)
            except Exception as exc:  # fail this step's requests; the loop keeps serving
                log.exception("engine step failed")
                message = f"engine step failed: {type(exc).__name__}: {exc}"
                for c in plan.chunks:
                    if c.request.finished:
                        continue
                    sched.release_failed(c.request)
                    self._finish(c.request, "error", message)
                    finished.append(c.request)
        t5 = time.perf_counter()

        for req in finished:  # pages of finished requests: full ones to the prefix cache, rest freed
            if req in sched.running:
                sched.release(req)
        t6 = time.perf_counter()
        self.counters.steps += 1
        if tracing:
            ms = 1000.0
            phases = {
                "cleanup": (t1 - t0 + t6 - t5) * ms, "refill": (t2 - t1) * ms, "prefill": (t3 - t2) * ms,
                "decode": (t5 - t4) * ms, "forward": (t4 - t3) * ms,
            }
            self._tracer.end_step(self.counters.steps - 1, plan, sched, arrivals, finished, phases)

    def _apply(self, plan: StepPlan, result: Any, finished: list[Request]) -> list[Request]:
        """Advance every chunk's request, append sampled tokens, hand out outputs.

        Requests that finish are appended to `finished` as they go (so a failure halfway
        leaves a consistent list); the same list is returned.
        """
        now = time.monotonic()
        tokens = result.token_ids
        logprobs = result.logprobs
        k = 0
        for c in plan.chunks:
            req = c.request
            req.num_computed = c.end
            if not c.sample:
                continue
            prompt_len = len(req.prompt_token_ids)
            if self.enable_prefix_cache and c.start < prompt_len:
                self.kv.commit(req.request_id, req.token_slice(0, c.end))  # share the prompt now
            req.append_token(tokens[k], logprobs[k] if logprobs is not None else None, now)
            k += 1
            self.counters.generation_tokens_total += 1
            if req.finished:
                self._finish(req, req.finish_reason or "stop", req.error, already=True)
                finished.append(req)
            elif req.stream:
                self._deliver(req, req.take_delta())
        return finished

    def _finish(self, req: Request, reason: str, error: str | None = None, already: bool = False) -> None:
        """Mark finished (unless `already`), finalise the text and hand out the last output."""
        if not already:
            req.finish(reason, error)
        if not req.uses_detokenizer:
            ids = req.output_token_ids
            if req.finish_reason == "stop" and isinstance(req.stop_reason, int):
                ids = ids[:-1]  # the stop token's text is not part of the output
            req.set_final_text(self.tokenizer.decode(ids, skip_special_tokens=req.params.skip_special_tokens))
        self.counters.finished_by_reason[req.finish_reason or reason] = (
            self.counters.finished_by_reason.get(req.finish_reason or reason, 0) + 1
        )
        with self._cond:
            self._live.discard(req.request_id)
        self._deliver(req, req.take_delta() if req.stream else req.final_output())

    def _deliver(self, req: Request, out: RequestOutput) -> None:
        if req.sink is None:
            return
        try:
            req.sink(out)
        except Exception:  # e.g. the caller's event loop is gone: nobody is listening
            log.debug("dropping output of %s: its consumer is gone", req.request_id, exc_info=True)
            if not req.finished:
                self.abort(req.request_id)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
