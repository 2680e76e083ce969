"""Beats of the architecture scene: the five layers, top to bottom, with live numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..trace import Trace
from . import format as fmt
from .batching import PHASE_TITLES

DEFAULT_SECONDS = 26.0


@dataclass(frozen=True)
class Layer:
    key: str  # server | engine | scheduler | cache | model
    title: str
    origin: str  # "astrai-cache 0.1.0 · astrai.cache.manager"
    facts: tuple[str, ...]
    highlight: bool


@dataclass(frozen=True)
class TitleBeat:
    title: str
    subtitle: str
    seconds: float


@dataclass(frozen=True)
class LayerBeat:
    layer: Layer
    seconds: float


@dataclass(frozen=True)
class HighlightBeat:
    """The key ideas: which layers glow and the note attached to each."""

    notes: tuple[tuple[str, str], ...]  # (layer key, note)
    seconds: float


ArchitectureBeat = TitleBeat | LayerBeat | HighlightBeat

_PACKAGES = {
    "server": "astrai-server",
    "engine": "astrai-scheduler",
    "scheduler": "astrai-scheduler",
    "cache": "astrai-cache",
    "model": "astrai-model",
}
_DEFAULT_MODULES = {
    "server": "astrai.server",
    "engine": "astrai.scheduler",
    "scheduler": "astrai.scheduler",
    "cache": "astrai.cache",
    "model": "astrai.model",
}


def _origin(trace: Trace, key: str) -> str:
    package = _PACKAGES[key]
    version = trace.packages.get(package)
    module = trace.modules.get(key, _DEFAULT_MODULES[key])
    return f"{package} {version} · {module}" if version else f"{package} · {module}"


def gqa(num_heads: int, num_kv_heads: int) -> str:
    """Query heads per KV head, '3:1' (or '2.5:1' when it does not divide)."""
    ratio = num_heads / num_kv_heads
    return f"{int(ratio)}:1" if ratio == int(ratio) else f"{ratio:.1f}:1"


def layers(trace: Trace) -> list[Layer]:
    """The five layers with their real package, module and numbers from the trace."""
    model, engine, steps = trace.model, trace.engine, trace.steps
    max_batch = max(len(s["decode"]) + len(s["prefill"]) for s in steps)
    preemptions = sum(len(s["preempted"]) for s in steps)
    shared = sum(len(s["pages"]["shared"]) for s in steps)
    evicted = sum(len(s["pages"]["evicted"]) for s in steps)
    dtype = str(engine.get("dtype") or model.get("dtype", "?"))
    heads, kv_heads = int(model["num_heads"]), int(model["num_kv_heads"])
    server_facts = ("OpenAI-compatible API: /v1/chat/completions · /v1/completions · /v1/models · /metrics",)
    rag = trace.retrieval
    if rag is not None:  # one line, so the five layers still fit the frame with the note row
        server_facts = (f"OpenAI API + RAG · {fmt.thousands(rag['passages'])} passages in {rag['vector_stores']} "
                        f"vector store{'s' if rag['vector_stores'] != 1 else ''} (HNSW + BM25) · "
                        f"{rag['cache_hit_share']:.0%} of RAG prompt tokens from the prefix cache",)
    return [
        Layer(
            "server",
            "HTTP server" + (" + retrieval" if rag is not None else ""),
            _origin(trace, "server"),
            server_facts,
            rag is not None,
        ),
        Layer(
            "engine",
            "Engine",
            _origin(trace, "engine"),
            (f"{len(trace.requests)} requests in this run · at most {engine['max_num_seqs']} running at once · "
             "streams RequestOutput deltas",),
            False,
        ),
        Layer(
            "scheduler",
            "Scheduler (background loop)",
            _origin(trace, "scheduler"),
            (f"{' → '.join(PHASE_TITLES.values())} · {fmt.thousands(len(steps))} steps · "
             f"up to {max_batch} sequences per forward · {preemptions} preemptions",),
            True,
        ),
        Layer(
            "cache",
            "Prefix cache + paged KV",
            _origin(trace, "cache"),
            (f"page size {trace.page_size} tokens · pool {fmt.thousands(trace.num_pages)} pages "
             f"({fmt.thousands(trace.page_size * trace.num_pages)} tokens) · "
             f"prefix pages shared: {fmt.thousands(shared)} · evicted: {fmt.thousands(evicted)}",),
            True,
        ),
        Layer(
            "model",
            "Transformer",
            _origin(trace, "model"),
            (f"{model['name']} · {model['num_layers']} layers · hidden {model['hidden_size']} · "
             f"vocab {fmt.thousands(model['vocab_size'])}",
             f"{heads} query / {kv_heads} KV heads (GQA {gqa(heads, kv_heads)}) · {dtype} · "
             f"{fmt.params(int(model['num_parameters']))} parameters"),
            False,
        ),
    ]


def architecture_beats(trace: Trace, max_seconds: float | None = None) -> list[ArchitectureBeat]:
    """Title, one beat per layer, then the highlight of the key ideas."""
    version = trace.packages.get("astrai-promo")
    subtitle = f"a live run of {trace.model['name']}" + (f" · recorded by astrai-promo {version}" if version else "")
    beats: list[ArchitectureBeat] = [TitleBeat("AstrAI — how a request flows", subtitle, 3.0)]
    beats += [LayerBeat(layer, 3.5) for layer in layers(trace)]
    notes: tuple[tuple[str, str], ...] = (
        ("scheduler", "key idea: requests join and leave the batch at every step"),
        ("cache", "key idea: KV pages on demand, shared prompt prefixes"),
    )
    if trace.retrieval is not None:
        notes = (("server", "key idea: passages placed so their KV pages come from the prefix cache"), *notes)
    beats.append(HighlightBeat(notes, 5.5))
    return _fit(beats, DEFAULT_SECONDS if max_seconds is None else max_seconds)


def _fit(beats: list[ArchitectureBeat], max_seconds: float) -> list[ArchitectureBeat]:
    total = sum(b.seconds for b in beats)
    if total <= max_seconds:
        return beats
    scale = max_seconds / total
    return [replace(b, seconds=round(b.seconds * scale, 3)) for b in beats]
