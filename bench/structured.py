"""Sampler cost of constrained rows: one step's sampling time with 0 vs k grammar-constrained rows of 64.

Run: python -m bench.structured [--rows 64] [--repeat 50]. Prints the median step sampling time for
greedy and random batches, with k = 0, 1, 8, 64 constrained rows (a nested JSON schema, llguidance
masks). Unconstrained batches keep the greedy argmax fast path; the k = 0 line is the baseline the
others are compared with. Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from astrai.model import load_model
from astrai.scheduler.grammar import GrammarCompiler
from astrai.scheduler.params import SamplingParams
from astrai.scheduler.sampler import Sampler
from astrai.scheduler.structured import StructuredOutputsParams

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city", "zip"]}},
    "required": ["name", "age", "tags", "address"]}


class Row:
    def __init__(self, params: SamplingParams, constraint) -> None:
        self.params = params
        self.prompt_token_ids: list[int] = [1, 2, 3]
        self.output_token_ids: list[int] = []
        self.constraint = constraint
        self.grammar_bitmask = None
        self.tokens_left = 1000
        self.random_key = (0, 0, 0)

    def banned_token_ids(self) -> list[int]:
        return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, tokenizer = load_model("smollm2-135m-instruct", dtype=torch.float32)
    vocab = 49152
    compiler = GrammarCompiler(tokenizer, vocab)
    spec = StructuredOutputsParams(json=SCHEMA)
    t0 = time.perf_counter()
    compiler.compile(spec)
    print(f"first compile (tokenizer + closing ranks + schema): {1000 * (time.perf_counter() - t0):.0f} ms")
    t0 = time.perf_counter()
    compiler.compile(StructuredOutputsParams(json={**SCHEMA, "title": "other"}))
    print(f"compile of a new schema: {1000 * (time.perf_counter() - t0):.1f} ms")
    sampler = Sampler()
    logits = torch.randn(args.rows, vocab)
    for temperature in (0.0, 1.0):
        base = None
        for k in sorted({0, 1, 8, args.rows}):
            rows = [Row(SamplingParams(temperature=temperature, structured_outputs=spec if i < k else None),
                        compiler.compile(spec) if i < k else None) for i in range(args.rows)]
            times = []
            for _ in range(args.repeat):
                scratch = logits.clone()  # the sampler edits constrained rows in place
                t = time.perf_counter()
                sampler.sample(scratch, rows)
                times.append(time.perf_counter() - t)
            med = statistics.median(times) * 1000
            base = base or med
            print(f"temperature {temperature}: {k:3d}/{args.rows} constrained rows: {med:7.3f} ms/step "
                  f"({med / base:.2f}x of unconstrained)")


if __name__ == "__main__":
    main()
