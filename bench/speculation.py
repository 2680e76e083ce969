"""Speculative decoding: output tok/s with speculation vs without, per workload, and against
llama.cpp's lookup decoding on the same GGUF and prompts, in the same run.

    python -m bench --only speculation          # as a section of the suite (JSON + BENCHMARKS.md)
    python -m bench.speculation [--quick]       # alone, printing a table

Workloads: bench/speculation_workloads.json (`python -m bench.speculation_workloads`): RAG
quoting three passages, a 200-line Python file edited, JSON reformatting, a chat repeating an
earlier turn, and open-ended chat as the control. Greedy, natural stops (EOS or max_tokens).

- batch-1: each variant alone through `Engine.stream`, speculation off / suffix / ngram
  alternating round by round (best round each); output tok/s = tokens after the first over the
  time from the first to the last (decode speed, as the decode section), summed over variants.
- 16 streams: 16 requests of the workload at once (`Engine.generate`), output tokens over wall
  time, speculation on vs off.
- llama.cpp: `llama-lookup -m GGUF -n N -t T -c C -f PROMPT --temp 0 --spec-draft-n-max 16`
  (prompt-lookup / n-gram cache decoding) and the same with `--spec-draft-n-max 0` (no drafts:
  llama.cpp's plain decode under the same timing) on the same chat-templated prompt text; its
  own "decoded N tokens in S seconds" line (decode only, like AstrAI's batch-1 figure).

Every AstrAI request gets a tenant of its own, so the suffix store of earlier outputs never
sees the bench's own repeats (a request is only helped by its own prompt and output).
The speculating engine's text is compared with the plain one's (identity; it needs the
batch-invariant kernels, issue 20).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.context import Context
from bench.peers import llama_tool
from bench.progress import log
from bench.speculation_workloads import load

METHODS = ("off", "suffix", "ngram")
_DECODED = re.compile(r"decoded\s+(\d+)\s+tokens in\s+([\d.]+)\s+s")
_FIELD = re.compile(r"^\S*\s*\S*\s*(n_drafted|n_accept|n_predict)\s*=\s*(\d+)", re.M)
_tenants = itertools.count()


def _params(max_tokens: int, speculation: bool = True):
    from astrai.scheduler import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, tenant=f"bench-{next(_tenants)}",
                          speculation=speculation)


def _batch1(engine, prompts: list[list[int]], max_tokens: int) -> dict:
    """Each prompt alone, streamed: decode tok/s summed over the prompts, and the tokens."""
    tokens, seconds, texts = 0, 0.0, []
    before = engine.stats()
    for ids in prompts:
        stamps, ids_out = [], []
        for delta in engine.stream(ids, _params(max_tokens)):
            now = time.perf_counter()
            stamps.extend([now] * len(delta.token_ids))
            ids_out += delta.token_ids
        texts.append(ids_out)
        if len(stamps) > 1:
            tokens += len(stamps) - 1
            seconds += stamps[-1] - stamps[0]
    after = engine.stats()
    drafted = after["spec_decode_num_draft_tokens"] - before["spec_decode_num_draft_tokens"]
    accepted = after["spec_decode_num_accepted_tokens"] - before["spec_decode_num_accepted_tokens"]
    return {"tok_s": tokens / seconds if seconds else None, "tokens": tokens, "seconds": seconds,
            "draft_tokens": drafted, "accepted_tokens": accepted, "outputs": texts}


def _streams(engine, prompts: list[list[int]], max_tokens: int, n: int) -> dict:
    batch = [prompts[i % len(prompts)] for i in range(n)]
    start = time.perf_counter()
    outs = engine.generate(batch, [_params(max_tokens) for _ in batch])
    seconds = time.perf_counter() - start
    produced = sum(len(o.token_ids) for o in outs)
    return {"tok_s": produced / seconds, "tokens": produced, "seconds": seconds}


def _llama(draft: int, model: str, text: str, max_tokens: int, threads: int, context: int) -> dict:
    """One llama-lookup run: drafts of up to `draft` tokens (0: plain decoding)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
        prompt_file = f.name
    try:
        cmd = [str(llama_tool("llama-lookup")), "-m", model, "-n", str(max_tokens), "-t", str(threads),
               "-c", str(context), "-f", prompt_file, "--temp", "0", "--spec-draft-n-max", str(draft)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        m = _DECODED.search(out)
        if proc.returncode != 0 or m is None:
            raise RuntimeError(f"llama-lookup exited with {proc.returncode}: {out[-800:]}")
        shown = {prompt_file: "PROMPT.txt"}
        row = {"tokens": int(m.group(1)), "seconds": float(m.group(2)),
               "command": " ".join(shown.get(c, c) for c in cmd)}
        row.update({k: int(v) for k, v in _FIELD.findall(out)})
        return row
    finally:
        Path(prompt_file).unlink(missing_ok=True)


def run(ctx: Context) -> dict:
    from astrai.scheduler import Engine

    s = ctx.scale
    data = load()
    model = ctx.model_path()
    engine = Engine.from_pretrained(model, **{**ctx.astrai.engine_kwargs(), "speculation": "suffix"})
    systems = {"suffix": engine, "off": engine.with_settings(speculation="off"),
               "ngram": engine.with_settings(speculation="ngram")}
    out: dict = {"workload": {"max_tokens": s.spec_tokens, "rounds": s.rounds, "streams": s.spec_streams,
                              "variants": s.spec_variants, "threads": ctx.threads, "greedy": True,
                              "copy_heavy": data["copy_heavy"]},
                 "engine": {k: str(v) for k, v in dataclass_dict(engine.describe()).items()}, "workloads": {}}
    try:
        for e in systems.values():  # warm up every engine's kernels and pools
            e.generate([[100 + i for i in range(32)]], _params(8))
        for name, variants in data["workloads"].items():
            if ctx.out_of_time():
                out["workloads"][name] = {"status": "skipped", "reason": ctx.out_of_time()}
                continue
            prompts = [engine.tokenizer.apply_chat_template(m, tokenize=True) for m in variants[: s.spec_variants]]
            row: dict = {"prompt_tokens": [len(p) for p in prompts], "batch1": {}, "streams": {}}
            rounds: dict[str, list[dict]] = {m: [] for m in METHODS}
            for _ in range(s.rounds):
                for method in METHODS:
                    rounds[method].append(_batch1(systems[method], prompts, s.spec_tokens))
            for method, rs in rounds.items():
                best = max(rs, key=lambda r: r["tok_s"] or 0.0)
                row["batch1"][method] = {k: v for k, v in best.items() if k != "outputs"} | {
                    "rounds_tok_s": [r["tok_s"] for r in rs]}
            row["identical"] = {m: rounds[m][0]["outputs"] == rounds["off"][0]["outputs"] for m in ("suffix", "ngram")}
            off_b1 = row["batch1"]["off"]["tok_s"]
            row["speedup"] = {m: row["batch1"][m]["tok_s"] / off_b1 for m in ("suffix", "ngram") if off_b1}
            stream_rounds: dict[str, list[dict]] = {"off": [], "suffix": []}
            for _ in range(s.rounds):
                for method in stream_rounds:
                    stream_rounds[method].append(_streams(systems[method], prompts, s.spec_tokens, s.spec_streams))
            for method, rs in stream_rounds.items():
                row["streams"][method] = max(rs, key=lambda r: r["tok_s"])
            row["streams_ratio"] = row["streams"]["suffix"]["tok_s"] / row["streams"]["off"]["tok_s"]
            row["llamacpp"] = _llama_rows(ctx, model, engine, variants[: s.spec_variants], s.spec_tokens)
            out["workloads"][name] = row
            log(f"[speculation] {name}: batch-1 off {off_b1:.1f} tok/s, suffix x{row['speedup'].get('suffix', 0):.2f},"
                f" ngram x{row['speedup'].get('ngram', 0):.2f}; 16 streams x{row['streams_ratio']:.2f}")
        out["suffix_store_tokens"] = engine.stats()["spec_decode_suffix_tokens"]
        out["suffix_store_capacity"] = engine.stats()["spec_decode_suffix_capacity_tokens"]
        out["cost_ratio"] = engine.speculator.cost.ratio() if engine.speculator is not None else None
    finally:
        for e in systems.values():
            e.shutdown()
    return out


def _llama_rows(ctx: Context, model: str, engine, variants: list, max_tokens: int) -> dict:
    if not ctx.wants_peers():
        return {"status": "skipped", "reason": "--skip-peers"}
    rows: dict = {}
    for tool, draft in (("llama-lookup", 16), ("llama-lookup-plain", 0)):
        try:
            runs = []
            for messages in variants:
                text = engine.tokenizer.apply_chat_template(messages, tokenize=False)
                context = len(engine.tokenizer.encode(text)) + max_tokens + 64
                runs.append(_llama(draft, model, text, max_tokens, ctx.threads, context))
            tokens = sum(r["tokens"] for r in runs)
            seconds = sum(r["seconds"] for r in runs)
            rows[tool] = {"status": "ok", "tok_s": tokens / seconds if seconds else None, "runs": runs,
                          "command": runs[0]["command"]}
            if tool == "llama-lookup":
                drafted = sum(r.get("n_drafted", 0) for r in runs)
                rows[tool]["acceptance"] = sum(r.get("n_accept", 0) for r in runs) / drafted if drafted else None
        except Exception as error:  # a missing or broken peer must not sink AstrAI's numbers
            rows[tool] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
    return rows


def dataclass_dict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)


def main() -> int:
    from bench.config import FULL, QUICK

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    ctx = Context(scale=QUICK if args.quick else FULL, quick=args.quick, skip_peers=args.skip_peers)
    result = run(ctx)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    from bench.report import speculation_section

    print(speculation_section({"speculation": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
