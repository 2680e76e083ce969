"""Record a live engine run into a trace file.

One run, three engines over the same loaded model:
1. the traced run: requests share a system prompt, have different prompt and output lengths,
   and arrive at different steps, so they join and leave the batch mid-flight over a small
   page pool (pages get reused, prefix pages shared, and cached pages may be evicted);
2. and 3. the throughput comparison: the same requests, all submitted at once, with
   `scheduling="static"` and then `"continuous"` (engines made by `Engine.with_settings`),
   timed on the wall clock.

Everything is read through the engine's public surface (`EngineClient`, `describe()`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .retrieval import RetrievalStatsError, scrape
from .trace import Trace, save_trace

if TYPE_CHECKING:  # the engine is imported only when recording
    from astrai.scheduler import Engine, EngineClient, EngineInfo, SamplingParams, TraceEvent

SYSTEM_PROMPT = (
    "You are the AstrAI demo assistant. Answer in one or two short, plain sentences, "
    "and never use lists or code."
)
PACKAGES = ("astrai-model", "astrai-cache", "astrai-scheduler", "astrai-server", "astrai-promo", "torch", "manim")


class RecordError(RuntimeError):
    """Recording failed; the message names the cause (bad model path, engine error, ...)."""


@dataclass(frozen=True)
class WorkloadRequest:
    question: str
    max_tokens: int
    arrival_step: int  # submitted once the engine has run this many steps (0: at the start)


@dataclass(frozen=True)
class Workload:
    name: str
    requests: tuple[WorkloadRequest, ...]
    page_size: int
    num_pages: int
    max_num_seqs: int
    max_num_batched_tokens: int


WORKLOADS: dict[str, Workload] = {
    "default": Workload(
        "default",
        (
            WorkloadRequest("What is a KV cache?", 32, 0),
            WorkloadRequest("Say hi.", 6, 0),
            WorkloadRequest("Why do language models generate text one token at a time?", 24, 0),
            WorkloadRequest("Name a color.", 8, 3),
            WorkloadRequest("Explain continuous batching to a new engineer in simple words.", 28, 8),
            WorkloadRequest("What is two plus two?", 8, 12),
            WorkloadRequest("Describe how paging works in an operating system and why it helps.", 20, 16),
            WorkloadRequest("Thanks!", 6, 22),
        ),
        page_size=8,
        num_pages=32,
        max_num_seqs=4,
        max_num_batched_tokens=96,
    ),
    "small": Workload(
        "small",
        (
            WorkloadRequest("What is a KV cache?", 12, 0),
            WorkloadRequest("Say hi.", 3, 0),
            WorkloadRequest("Why do models generate one token at a time?", 8, 2),
            WorkloadRequest("Name a color.", 4, 5),
            WorkloadRequest("Explain paging in simple words.", 6, 7),
        ),
        page_size=8,
        num_pages=20,
        max_num_seqs=3,
        max_num_batched_tokens=96,
    ),
}


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _modules(info: EngineInfo) -> dict[str, str]:
    """The real modules behind each layer, as the live engine reports them (never guessed)."""
    server = "astrai.server"
    try:
        if importlib.util.find_spec("astrai.server.app") is not None:
            server = "astrai.server.app"
    except ModuleNotFoundError:
        pass
    return {"server": server, **info.modules}


def _prompts(engine: EngineClient, workload: Workload) -> list[list[int]]:
    """Chat-formatted token ids: every prompt starts with the same system prompt tokens."""
    prompts = []
    for req in workload.requests:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": req.question}]
        prompts.append(list(engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)))
    return prompts


def _params(req: WorkloadRequest) -> SamplingParams:
    from astrai.scheduler import SamplingParams

    # Greedy and ignore_eos: output lengths are exactly max_tokens, so both throughput runs
    # produce the same number of tokens and the trace is reproducible.
    return SamplingParams(max_tokens=req.max_tokens, temperature=0.0, ignore_eos=True)


def _traced_run(engine: EngineClient, workload: Workload, prompts: list[list[int]], progress: bool) -> tuple[list, list]:
    """Run the workload with step-timed arrivals; return (trace event dicts, request records)."""
    events: list[dict[str, Any]] = []
    results: queue.Queue = queue.Queue()
    pending = list(range(len(workload.requests)))
    records: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    start = time.monotonic()

    def submit_due(step: int | None) -> None:
        with lock:
            due = [i for i in pending if step is None or workload.requests[i].arrival_step <= step]
            for i in due:
                pending.remove(i)
                rid = f"r{i + 1}"
                records[i] = {"request_id": rid, "arrival": round(time.monotonic() - start, 4),
                              "prompt_tokens": len(prompts[i]), "output_tokens": 0}
                engine.add_request(prompts[i], _params(workload.requests[i]), request_id=rid, sink=results.put)

    def on_event(event: TraceEvent) -> None:
        events.append(event.to_dict())
        submit_due(event.step + 1)

    unsubscribe = engine.subscribe(on_event)
    try:
        submit_due(0)
        done = 0
        with tqdm(total=len(prompts), desc="record: traced run", unit="req", disable=not progress) as bar:
            while done < len(prompts):
                try:
                    out = results.get(timeout=0.5)
                except queue.Empty:
                    if pending and engine.wait_idle(timeout=0.05):
                        submit_due(None)  # the engine ran dry before the arrival step: submit now
                    continue
                if out.finished:
                    if out.finish_reason == "error":
                        raise RecordError(f"the engine failed request {out.request_id}: {out.error}")
                    index = int(out.request_id[1:]) - 1
                    records[index]["output_tokens"] = len(out.token_ids)
                    done += 1
                    bar.update(1)
        engine.wait_idle(timeout=30)
    finally:
        unsubscribe()
    return events, [records[i] for i in sorted(records)]


def _throughput(engine: Engine, workload: Workload, prompts: list[list[int]], mode: str,
                progress: bool) -> dict[str, float]:
    """Time the whole workload submitted at once on a fresh engine (same model) in `mode`."""
    params = [_params(r) for r in workload.requests]
    with engine.with_settings(
        max_num_seqs=workload.max_num_seqs, max_num_batched_tokens=workload.max_num_batched_tokens,
        page_size=workload.page_size, num_pages=workload.num_pages, scheduling=mode,
    ) as timed, tqdm(total=1, desc=f"record: {mode} throughput", unit="run", disable=not progress) as bar:
        timed.generate(["Hi"], _params(WorkloadRequest("", 2, 0)))  # warm up outside the timing
        begin = time.perf_counter()
        outs = timed.generate(prompts, params)
        seconds = time.perf_counter() - begin
        bar.update(1)
    tokens = sum(len(o.token_ids) for o in outs)
    return {"tokens": tokens, "seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 2)}


def record_trace(out: str | Path, model: str = "smollm2-135m-instruct", workload: str | Workload = "default",
                 progress: bool = True, retrieval_from: str | None = None,
                 api_key: str | None = None) -> tuple[Path, Trace]:
    """Run the engine live on `model` and write the trace to `out`; returns (path, trace).

    `retrieval_from`: the URL of a running `astrai serve` with vector stores; its store size and
    RAG cache-hit share become the trace's `retrieval` section (read first: a bad URL fails fast)."""
    retrieval = None
    if retrieval_from is not None:
        try:
            retrieval = scrape(retrieval_from, api_key)
        except RetrievalStatsError as exc:
            raise RecordError(str(exc)) from None
    if isinstance(workload, str):
        if workload not in WORKLOADS:
            raise RecordError(f"unknown workload {workload!r}; choose one of: {', '.join(WORKLOADS)}")
        workload = WORKLOADS[workload]
    from astrai.scheduler import Engine

    try:
        engine = Engine.from_pretrained(
            model, max_num_seqs=workload.max_num_seqs, max_num_batched_tokens=workload.max_num_batched_tokens,
            page_size=workload.page_size, num_pages=workload.num_pages,
        )
    except Exception as exc:  # the loader's own message names the file and the problem
        raise RecordError(f"cannot load model {model!r}: {exc}") from exc
    with engine:
        prompts = _prompts(engine, workload)
        steps, requests = _traced_run(engine, workload, prompts, progress)
        static = _throughput(engine, workload, prompts, "static", progress)
        continuous = _throughput(engine, workload, prompts, "continuous", progress)
        info = engine.describe()
        model_info = dataclasses.asdict(engine.config)
        model_info["num_parameters"] = engine.config.num_parameters()
        trace = Trace(
            packages=_versions(),
            model=model_info,
            engine={"page_size": info.page_size, "num_pages": info.num_pages, "max_num_seqs": info.max_num_seqs,
                    "max_num_batched_tokens": info.max_num_batched_tokens, "dtype": info.dtype,
                    "prefix_cache": info.prefix_cache},
            requests=requests,
            steps=steps,
            throughput={"static": static, "continuous": continuous,
                        "ratio": round(continuous["tokens_per_s"] / static["tokens_per_s"], 3),
                        "method": "the same requests submitted at once; wall-clock tokens/s"},
            modules=_modules(info),
            workload={"name": workload.name, "system_prompt": SYSTEM_PROMPT,
                      "arrival_steps": [r.arrival_step for r in workload.requests],
                      "max_tokens": [r.max_tokens for r in workload.requests]},
            retrieval=retrieval,
        )
    return save_trace(trace, out), trace
