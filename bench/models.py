"""The models the suite runs (`--model`): what each section needs to know about one GGUF.

Every system in every section of a run uses the one file chosen here. The bundled SmolLM2 is
the default; `gemma3-270m` is the real Gemma 3 270M Q4_K_M file people download, assembled once
per machine into the user's cache folder (bench/fixtures/gemma_file.py). Each model carries the
headline targets of the issue it answers to (reported, never asserted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Targets:
    """Headline targets; None: the row is shown without a target."""

    decode_ratio: float  # batch-1 decode >= this x llama-bench tg
    decode_stretch: float | None  # a stretch goal named next to it
    decode_ceiling_share: float | None  # ... or >= this share of the read-bandwidth ceiling, if that is lower
    single_itl_ratio: float | None  # one streaming user: ITL p50 <= this x llama-server's
    streams16_ratio: float  # 16 concurrent streams: output tok/s >= this x llama-server -np 16
    offline_tok_s: float | None  # offline batch: output tok/s at least this
    offline_ratio: float | None  # offline batch: output tok/s >= this x llama-batched-bench
    ttft_ratio: float  # TTFT of the long prompt <= this x llama.cpp's
    serve_overhead_bytes: float | None  # idle `astrai serve` RSS <= weights + KV pool + this
    load_overhead_bytes: float | None  # RSS added by loading the file <= file size + this
    perplexity_tolerance: float | None  # |ours / llama-perplexity - 1| <= this
    source: str  # where the targets come from


@dataclass(frozen=True)
class BenchModel:
    key: str  # the --model value
    title: str  # the BENCHMARKS.md heading
    locate: Callable[[], Path]  # the GGUF path (may build it once, never downloads)
    token_range: tuple[int, int]  # random prompt ids are drawn from these ordinary tokens (no special ones)
    targets: Targets

    def path(self) -> Path:
        return self.locate()


def _bundled_smollm2() -> Path:
    from astrai.model import bundled_gguf_path

    return bundled_gguf_path(DEFAULT_MODEL)


def _gemma3_270m() -> Path:
    from bench.fixtures.gemma_file import gemma_gguf

    return gemma_gguf()


MB = 10**6

MODELS: dict[str, BenchModel] = {
    DEFAULT_MODEL: BenchModel(
        key=DEFAULT_MODEL, title="SmolLM2-135M-Instruct Q4_1 (bundled)", locate=_bundled_smollm2,
        token_range=(100, 10000),  # ids 0-16 are SmolLM2's special tokens
        # the every-CPU issue's targets for AVX-512 VNNI / AMX machines; on AVX2-only machines its
        # target is "no worse than the Zen 3 run of 2026-12-01" (1.42x, 2.41x, 2.15x, 0.44x)
        targets=Targets(decode_ratio=1.5, decode_stretch=None, decode_ceiling_share=None, single_itl_ratio=1.0,
                        streams16_ratio=4.0, offline_tok_s=None, offline_ratio=4.0, ttft_ratio=0.25,
                        serve_overhead_bytes=500 * MB, load_overhead_bytes=None, perplexity_tolerance=None,
                        source="the every-CPU issue (#20), for AVX-512 VNNI / AMX machines"),
    ),
    "gemma3-270m": BenchModel(
        key="gemma3-270m", title="Gemma 3 270M Q4_K_M", locate=_gemma3_270m,
        # 494..255967 are every NORMAL token: below are control, user-defined ("\n\n", "<td>") and
        # byte tokens, above the image and unused control tokens
        token_range=(494, 255967),
        targets=Targets(decode_ratio=1.3, decode_stretch=None, decode_ceiling_share=0.9, single_itl_ratio=None, streams16_ratio=2.0,
                        offline_tok_s=None, offline_ratio=None, ttft_ratio=0.6, serve_overhead_bytes=500 * MB,
                        load_overhead_bytes=300 * MB, perplexity_tolerance=0.01,
                        source="the model-coverage issue (#19)"),
    ),
}


def bench_model(key: str | None) -> BenchModel:
    """The model of a --model value (None: the default); KeyError naming the choices."""
    key = key or DEFAULT_MODEL
    if key not in MODELS:
        raise KeyError(f"unknown bench model {key!r}; choose from {', '.join(MODELS)}")
    return MODELS[key]


def num_parameters(path: str | Path) -> tuple[int, str]:
    """Exact parameter count (tied embeddings once) of the GGUF: astrai.model's own config of it."""
    from astrai.model import load_model

    model, _ = load_model(path)
    return int(model.config.num_parameters()), "astrai.model load_model(GGUF).config.num_parameters()"
