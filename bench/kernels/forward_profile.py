"""Where a native decode step's time goes: per-kernel time of the fused C++ forward.

    python -m bench.kernels.forward_profile --batch 1 --context 192
    python -m bench.kernels.forward_profile --batch 64 --context 192
    python -m bench.kernels.forward_profile --prefill 1024      # one fresh prompt of 1024 tokens
    python -m bench.kernels.forward_profile --chunk 8           # 8 new tokens per sequence over its cache
                                                                # (speculative verification: 1 + k rows)

Loads the bundled GGUF (or `--model PATH`) as the engine serves it (packed Q4_1/Q8_0 linears, float32 activations,
float16 KV), builds decode steps of `--batch` sequences at `--context` tokens over a paged cache,
and prints the step's wall time with the native decoder's own per-kernel profile (linears,
attention, norms, ...). Not part of `python -m bench`; run on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from astrai.model import ForwardBatch, NativeForward, load_model

PAGE = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=192, help="tokens already in each sequence's cache")
    parser.add_argument("--prefill", type=int, default=0, help="profile prefills of this many tokens instead")
    parser.add_argument("--chunk", type=int, default=1, help="new tokens per sequence per step (a verification "
                        "chunk of 1 + k tokens over the cached context; 1 = plain decode)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="a bundled model's name or a GGUF path (default: the bundled SmolLM2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    fused = NativeForward.build(model)
    if fused is None:
        raise SystemExit("the native kernels are unavailable here (see the log line above)")
    cfg, decoder = model.config, fused.decoder
    if args.prefill:
        args.context, args.batch = 0, 1
        prompt = [(7 * i) % cfg.vocab_size for i in range(args.prefill)]
        args.steps = max(1, min(args.steps, 3))

    pages = -(-(max(args.prefill, args.context + (args.steps + 8) * args.chunk)) // PAGE)
    shape = (args.batch * pages, PAGE, cfg.num_kv_heads, cfg.head_dim)
    kv = [(torch.zeros(shape, dtype=torch.float16), torch.zeros(shape, dtype=torch.float16)) for _ in range(cfg.num_layers)]
    tables = [list(range(b * pages, (b + 1) * pages)) for b in range(args.batch)]

    def step(position: int) -> ForwardBatch:
        if args.prefill:
            return ForwardBatch.build([prompt], [0], tables, PAGE)
        rows = list(range(args.batch * args.chunk))  # logits for every new token, as verification asks
        return ForwardBatch.build([[5] * args.chunk] * args.batch, [position] * args.batch, tables, PAGE,
                                  logits_indices=rows)

    for i in range(1 if args.prefill else 3):
        fused(step(args.context + i * args.chunk), kv, PAGE)
    decoder.set_profiling(True)
    start = time.perf_counter()
    for i in range(args.steps):
        fused(step(args.context + (3 + i) * args.chunk), kv, PAGE)
    wall = (time.perf_counter() - start) / args.steps
    profile = dict(decoder.profile())
    steps = profile.pop("steps")
    total = sum(profile.values())
    print(f"load average {os.getloadavg()}, {args.threads} threads")
    tokens = args.prefill or args.batch * args.chunk
    what = f"prefill of {args.prefill} tokens" if args.prefill else f"batch {args.batch}, context {args.context}"
    if args.chunk > 1:
        what += f", {args.chunk} new tokens per sequence"
    print(f"{what}: {wall * 1e3:.2f} ms/step wall ({tokens / wall:.0f} tok/s), kernels {total / steps * 1e3:.2f} ms/step")
    for name, seconds in sorted(profile.items(), key=lambda item: -item[1]):
        print(f"  {name:16s} {seconds / steps * 1e3:8.3f} ms  {seconds / total * 100:5.1f}%")


if __name__ == "__main__":
    main()
