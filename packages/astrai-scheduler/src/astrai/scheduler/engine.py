"""Engine: the public face of AstrAI's inference engine.

It validates settings, builds the parts (KV cache manager, scheduler, model runner, sampler)
and turns caller input into requests for the `EngineCore`, whose background thread runs the
loop. Callers in any thread (or asyncio loop) submit requests and get `RequestOutput`s back
through a per-request sink: a queue.Queue, or an asyncio.Queue fed with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from astrai.cache import KVCacheManager
from astrai.model import (
    ForwardModel,
    ModelConfig,
    NativeForward,
    Tokenizer,
    is_low_bit_checkpoint,
    load_model,
    locate_model,
    model_id,
)

from .client import EngineInfo, EngineStats, Prompt, TraceCallback
from .core import EngineCore
from .errors import FieldError, PromptTooLongError
from .grammar import GrammarCompiler
from .memory import default_num_pages, engine_dtype, resolve_device
from .memory import kv_cache_dtype as resolve_kv_cache_dtype
from .outputs import RequestOutput
from .params import SamplingParams
from .request import Request, Sink
from .runner import ModelRunner
from .sampler import Sampler
from .scheduler import Scheduler
from .speculation import METHODS as SPECULATION_METHODS
from .speculation import SpeculationCounters, Speculator, make_proposer
from .speculation.cost import StepCost

log = logging.getLogger("astrai.scheduler")


class Engine:
    """Continuous-batching inference over one model. Thread-safe; use as a context manager.

    Implements `EngineClient`, the surface the server and promo use.
    """

    def __init__(
        self,
        model: ForwardModel,
        tokenizer: Tokenizer,
        *,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 2048,
        max_model_len: int | None = None,
        page_size: int = 16,
        num_pages: int | None = None,
        enable_prefix_cache: bool = True,
        scheduling: str = "continuous",
        seed: int | None = None,
        kv_cache_dtype: str | torch.dtype | None = None,
        speculation: str = "suffix",
        speculation_max_tokens: int = 16,
        speculation_suffix_tokens: int = 262_144,
        speculation_shared_suffix: bool = False,
        speculation_row_cost: float | None = None,
    ) -> None:
        _check_positive("max_num_seqs", max_num_seqs)
        _check_positive("speculation_max_tokens", speculation_max_tokens)
        if speculation not in SPECULATION_METHODS:
            raise ValueError(f"speculation must be one of {', '.join(SPECULATION_METHODS)}, got {speculation!r}")
        if isinstance(speculation_suffix_tokens, bool) or not isinstance(speculation_suffix_tokens, int) \
                or speculation_suffix_tokens < 0:
            raise ValueError(f"speculation_suffix_tokens must be a non-negative integer, got {speculation_suffix_tokens!r}")
        if not isinstance(speculation_shared_suffix, bool):
            raise ValueError(f"speculation_shared_suffix must be a bool, got {speculation_shared_suffix!r}")
        if speculation_row_cost is not None and (isinstance(speculation_row_cost, bool)
                                                 or not isinstance(speculation_row_cost, (int, float))
                                                 or not 0.05 <= speculation_row_cost <= 4.0):
            raise ValueError(f"speculation_row_cost must be a number in [0.05, 4] or None, got {speculation_row_cost!r}")
        _check_positive("max_num_batched_tokens", max_num_batched_tokens)
        _check_positive("page_size", page_size)
        if max_model_len is not None:
            _check_positive("max_model_len", max_model_len)
        if num_pages is not None:
            _check_positive("num_pages", num_pages)
        if scheduling not in ("continuous", "static"):
            raise ValueError(f"scheduling must be 'continuous' or 'static', got {scheduling!r}")
        self._settings: dict[str, Any] = dict(
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
            page_size=page_size, num_pages=num_pages, enable_prefix_cache=enable_prefix_cache,
            scheduling=scheduling, seed=seed, kv_cache_dtype=kv_cache_dtype, speculation=speculation,
            speculation_max_tokens=speculation_max_tokens, speculation_suffix_tokens=speculation_suffix_tokens,
            speculation_shared_suffix=speculation_shared_suffix, speculation_row_cost=speculation_row_cost,
        )
        self.model = model
        self.tokenizer = tokenizer
        self.config: ModelConfig = model.config
        self.scheduling = scheduling
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_prefix_cache = enable_prefix_cache
        cfg = self.config
        kv_dtype = resolve_kv_cache_dtype(kv_cache_dtype, model)
        if num_pages is None:
            num_pages = default_num_pages(cfg, kv_dtype, model.device, page_size, max_num_seqs)
        self.kv = KVCacheManager(
            cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, page_size=page_size, num_pages=num_pages,
            dtype=kv_dtype, device=model.device, enable_prefix_cache=enable_prefix_cache,
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
        self._grammars = GrammarCompiler(tokenizer, cfg.vocab_size)
        self._groups: dict[str, tuple[str, ...]] = {}  # first id of an n > 1 request -> its siblings' ids
        # Unseeded requests get a seed of their own from here (in submission order).
        self._seeds = random.Random(seed)
        self._seeds_lock = threading.Lock()
        # Speculative decoding: drafts verified inside the step, text the same as without it.
        self.speculation = speculation
        proposer = make_proposer(speculation, suffix_tokens=speculation_suffix_tokens,
                                 shared_suffix=speculation_shared_suffix)
        # The cost of one more row relative to a step: learnt from the steps' times unless given.
        cost = StepCost() if speculation_row_cost is None else StepCost(float(speculation_row_cost), fixed=True)
        self.speculator = None if proposer is None else Speculator(proposer, max_tokens=speculation_max_tokens,
                                                                   cost=cost)
        self._core = EngineCore(self.scheduler, ModelRunner(model, self.kv, Sampler()), self.kv, tokenizer,
                                enable_prefix_cache=enable_prefix_cache, speculator=self.speculator)

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        quantization: str = "auto",
        **kwargs: Any,
    ) -> Engine:
        """Load a built-in name, an HF model directory or a .gguf file and start an engine.

        `quantization="auto"` serves a GGUF's weights packed as they are (native
        CPU kernels), `"none"` dequantizes them to `dtype`. `dtype` None / "auto" is the engine's
        choice for this machine (`memory.engine_dtype`), not the checkpoint's own.
        """
        dev = resolve_device(device)
        low_bit = quantization == "auto" and is_low_bit_checkpoint(model)
        model_obj, tokenizer = load_model(model, dtype=engine_dtype(dtype, dev, low_bit), device=dev,
                                          quantization=quantization)
        # bf16 on an AMX/AVX512-BF16 CPU: pre-packed oneDNN matmuls; float32 on the CPU: the whole
        # step as one native call (a ForwardModel of its own). Each applies only where it can.
        forward: ForwardModel = model_obj
        if not model_obj.pack_for_cpu():
            forward = NativeForward.build(model_obj) or model_obj
        return cls(forward, tokenizer, **kwargs)

    def with_settings(self, **overrides: Any) -> Engine:
        """A new, independent Engine over this one's loaded model and tokenizer.

        Settings (the keyword arguments of `Engine(...)`) not given are this engine's; it gets
        its own KV pool and thread, so shut it down on its own (it is a context manager too).
        """
        unknown = sorted(set(overrides) - set(self._settings))
        if unknown:
            raise TypeError(f"unknown Engine setting {unknown[0]!r}; settings are {sorted(self._settings)}")
        return Engine(self.model, self.tokenizer, **{**self._settings, **overrides})

    @staticmethod
    def locate_model(model: str) -> Path:
        """Where `from_pretrained(model)` would load from, checked without loading: raises
        ModelLoadError at once for a missing bundled-model package, a path that does not exist,
        or a GGUF whose header says the engine cannot run it."""
        return locate_model(model)

    @staticmethod
    def model_id(model: str) -> str:
        """The id `model` is known by: a GGUF file's `general.name` (else its file name), anything
        else as given (astrai.model's `model_id`; reads a GGUF's header only)."""
        return model_id(model)

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
        """Queue a request; outputs go to `sink` (deltas if `stream`, else one final output).

        With `params.n > 1` the sink sees the outputs of all n samples (`RequestOutput.index`);
        the returned id names them all for `abort`.
        """
        reqs = self._make_requests(prompt, params, request_id, priority, stream)
        if len(reqs) > 1:
            sink = self._group_sink(reqs, sink)
        for req in reqs:
            req.sink = sink
        self._core.submit(reqs)
        return reqs[0].request_id

    def abort(self, request_id: str) -> None:
        """Stop a request (all n samples of it); each finishes with "abort" and frees its pages next step."""
        for rid in self._groups.get(request_id, (request_id,)):
            self._core.abort(rid)

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run prompts to completion; outputs come back in input order (n > 1: the n samples in a row)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if isinstance(params, Sequence):
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
            plist = list(params)
        else:
            plist = [params] * len(prompts)
        reqs = [r for p, sp in zip(prompts, plist, strict=True) for r in self._make_requests(p, sp, None, 0, False)]
        results: queue.Queue[RequestOutput] = queue.Queue()
        for r in reqs:
            r.sink = results.put
        self._core.submit(reqs)
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
        """Yield RequestOutput deltas (n > 1: of every sample, by `index`); leaving early aborts."""
        reqs = self._make_requests(prompt, params, request_id, priority, True)
        outputs: queue.Queue[RequestOutput] = queue.Queue()
        for req in reqs:
            req.sink = outputs.put
        self._core.submit(reqs)
        return self._iterate(reqs, outputs)

    def _iterate(self, reqs: list[Request], outputs: queue.Queue[RequestOutput]) -> Iterator[RequestOutput]:
        group = self._hold_group(reqs)
        left = len(reqs)
        try:
            while left:
                out = outputs.get()
                left -= out.finished
                yield out
        finally:
            if left:
                for req in reqs:
                    self._core.abort(req.request_id)
            self._groups.pop(group, None)

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
        reqs = self._make_requests(prompt, params, request_id, priority, True)
        return self._aiterate(reqs)

    async def _aiterate(self, reqs: list[Request]) -> AsyncIterator[RequestOutput]:
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def sink(out: RequestOutput) -> None:
            loop.call_soon_threadsafe(outputs.put_nowait, out)

        for req in reqs:
            req.sink = sink
        group = self._hold_group(reqs)
        self._core.submit(reqs)
        left = len(reqs)
        try:
            while left:
                out = await outputs.get()
                left -= out.finished
                yield out
        finally:
            if left:
                for req in reqs:
                    self._core.abort(req.request_id)
            self._groups.pop(group, None)

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams | None = None) -> RequestOutput:
        """Apply the model's chat template and generate one reply."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return self.generate([list(ids)], params)[0]

    def lookup_prefix(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of `token_ids` the prefix cache holds now, changing nothing (no
        lock, split, recency or counter moves). Read without stopping the engine, like `stats()`:
        advisory, for ordering RAG passages. At most len - 1 (the last token is always computed);
        0 with the prefix cache off."""
        if not self.enable_prefix_cache:
            return 0
        return self.kv.lookup(list(token_ids)).cached_tokens

    def subscribe(self, callback: TraceCallback) -> Callable[[], None]:
        """Receive one TraceEvent per step (on the engine thread); returns an unsubscribe function."""
        return self._core.subscribe(callback)

    def stats(self) -> EngineStats:
        """A snapshot for metrics endpoints (read without stopping the engine)."""
        kv = self.kv
        free = kv.num_free_pages()
        c = self._core.counters
        spec = self.speculator
        drafts = spec.counters if spec is not None else SpeculationCounters()
        return {
            "num_running": len(self.scheduler.running),
            "num_waiting": len(self.scheduler.waiting) + self._core.num_inbox,
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
            "spec_decode_num_drafts": drafts.num_drafts,
            "spec_decode_num_draft_tokens": drafts.num_draft_tokens,
            "spec_decode_num_accepted_tokens": drafts.num_accepted_tokens,
            "spec_decode_num_accepted_tokens_per_pos": dict(drafts.accepted_per_position),
            "spec_decode_suffix_tokens": spec.proposer.held_tokens if spec is not None else 0,
            "spec_decode_suffix_capacity_tokens": spec.proposer.capacity_tokens if spec is not None else 0,
        }

    def describe(self) -> EngineInfo:
        """How this engine is set up, including the module behind each layer (read from the live objects)."""
        return EngineInfo(
            model=self.config.name,
            dtype=str(self.model.dtype).removeprefix("torch."),
            weights=self.model.weight_format(),
            kv_cache_dtype=str(self.kv.kv.dtype).removeprefix("torch."),
            forward=self.model.backend,
            kernels=self.model.kernels,
            device=str(self.model.device),
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            page_size=self.kv.page_size,
            num_pages=self.kv.num_pages,
            prefix_cache=self.enable_prefix_cache,
            scheduling=self.scheduling,
            speculation=self.speculation,
            modules={"engine": type(self).__module__, "core": type(self._core).__module__,
                     "scheduler": type(self.scheduler).__module__, "cache": type(self.kv).__module__,
                     "model": type(self.model).__module__},
        )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (and the engine thread is parked).

        Returns False on timeout. Handy for tests and graceful drains.
        """
        return self._core.wait_idle(timeout)

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Abort whatever is in flight and stop the engine thread. Idempotent."""
        self._core.shutdown(timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- request intake (caller threads) -------------------------------------------------

    def _make_requests(
        self, prompt: Prompt, params: SamplingParams | None, request_id: str | None, priority: int, stream: bool
    ) -> list[Request]:
        """One request, or `params.n` siblings: the same seed, their random numbers keyed by their
        index too; all after the first wait for its prefill so they attach the prompt's pages
        from the prefix cache."""
        first = self._make_request(prompt, params, request_id, priority, stream)
        n = first.params.n
        if n == 1:
            return [first]
        reqs = [first]
        for i in range(1, n):
            sibling = dataclasses.replace(first.params, n=1)
            reqs.append(self._make_request(first.prompt_token_ids, sibling, f"{first.request_id}#{i}", priority,
                                           stream, index=i, follows=first))
        return reqs

    def _hold_group(self, reqs: list[Request]) -> str:
        """Name n > 1 siblings under the first id (so `abort(id)` stops them all) while they run."""
        if len(reqs) > 1:
            self._groups[reqs[0].request_id] = tuple(r.request_id for r in reqs)
        return reqs[0].request_id

    def _group_sink(self, reqs: list[Request], sink: Sink | None) -> Sink | None:
        """Remember the siblings under the first id (for abort) until all have finished."""
        group = self._groups[reqs[0].request_id] = tuple(r.request_id for r in reqs)
        left = [len(group)]

        def grouped(out: RequestOutput) -> None:
            if out.finished:
                left[0] -= 1
                if not left[0]:
                    self._groups.pop(group[0], None)
            if sink is not None:
                sink(out)

        return grouped

    def _make_request(
        self, prompt: Prompt, params: SamplingParams | None, request_id: str | None, priority: int, stream: bool,
        *, index: int = 0, follows: Request | None = None,
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
        if params.logit_bias:
            bad = next((t for t in params.logit_bias if t >= self._vocab_size), None)
            if bad is not None:
                raise FieldError("logit_bias", f"token id {bad} is outside the vocabulary [0, {self._vocab_size})")
        constraint = None
        if params.structured_outputs is not None:
            constraint = self._grammars.compile(params.structured_outputs)  # GrammarError names the problem
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        detok = None
        if stream or params.stop_strings:
            detok = self.tokenizer.incremental(skip_special_tokens=params.skip_special_tokens)
        if request_id is None:
            request_id = self._core.new_request_id()
        elif not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        with self._seeds_lock:
            sample_seed = self._seeds.getrandbits(63)
        return Request(
            request_id, ids, params, max_tokens=max_tokens, eos_token_ids=self._eos, priority=priority,
            stream=stream, detokenizer=detok, constraint=constraint, index=index, follows=follows,
            sample_seed=sample_seed,
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


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
