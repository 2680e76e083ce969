"""BENCHMARKS.md, generated from one run's JSON: every figure on the page comes from it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from bench.models import DEFAULT_MODEL, MODELS, Targets, bench_model

MB = 1e6


def fmt(v, digits: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ok(d) -> bool:
    return isinstance(d, dict) and d.get("status") == "ok"


def _status(d) -> str:
    return f"{d.get('status')}: {d.get('reason', '')}" if isinstance(d, dict) else "not run"


def _dig(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _loads(r: dict, section: str) -> list[list[float]]:
    snap = (r.get("loads") or {}).get(section) or {}
    return [snap[k]["load_average"] for k in ("start", "end") if k in snap]


def load_text(r: dict, section: str) -> str:
    return " → ".join(f"{x[0]:.1f}" for x in _loads(r, section)) or "–"


# Other processes may use this share of the machine's CPU during a section before its verdicts
# are called unreliable (spin-waiting peers collapse when the cores are shared).
OUTSIDE_CPU_LIMIT = 0.10
# /proc/stat counts CPU time in clock ticks (10 ms): a shorter section cannot be judged from it.
MIN_JUDGED_SECONDS = 2.0


def outside_cpu_share(r: dict, section: str) -> float | None:
    """The share of the machine's CPU time during a section used by processes that were not the
    bench or its children: machine busy seconds minus the bench's own (None for runs before
    these counters were recorded)."""
    snap = (r.get("loads") or {}).get(section) or {}
    start, end = snap.get("start") or {}, snap.get("end") or {}
    keys = ("monotonic", "machine_busy_s", "own_cpu_s")
    if any(start.get(k) is None or end.get(k) is None for k in keys):
        return None
    wall = end["monotonic"] - start["monotonic"]
    cores = end.get("cores") or (r.get("machine") or {}).get("cores") or 1
    if wall < MIN_JUDGED_SECONDS:
        return None
    outside = (end["machine_busy_s"] - start["machine_busy_s"]) - (end["own_cpu_s"] - start["own_cpu_s"])
    return max(0.0, outside) / (wall * cores)


def overloaded(r: dict, section: str) -> str | None:
    """Why a section's numbers cannot carry a verdict: other processes took more than
    OUTSIDE_CPU_LIMIT of the CPU while it ran; for older runs without CPU counters, a 1-minute
    load average above the core count at its start or end (which also counts the section's own
    servers and client, so it flags busy sections of an idle machine too)."""
    cores = (r.get("machine") or {}).get("cores")
    share = outside_cpu_share(r, section)
    if share is not None:
        return f"other processes used {share:.0%} of the CPU" if share > OUTSIDE_CPU_LIMIT else None
    if (r.get("section_seconds") or {}).get(section, MIN_JUDGED_SECONDS) < MIN_JUDGED_SECONDS:
        return None  # too short to judge either way
    peaks = [x[0] for x in _loads(r, section)]
    if not peaks and (r.get("machine") or {}).get("load_average"):
        peaks = [r["machine"]["load_average"][0]]
    if cores and peaks and max(peaks) > cores:
        return f"load {max(peaks):.1f} on {cores} cores"
    return None


def verdict(met: bool | None, r: dict, section: str) -> str:
    if met is None:
        return "–"
    busy = overloaded(r, section)
    if busy:
        return f"{'yes' if met else 'no'}, unreliable ({busy})"
    return "yes" if met else "no"


def short_command(cmd: str) -> str:
    """A command as a reader would type it: tool name only, the GGUF as $GGUF."""
    words = cmd.split()
    out = []
    for i, w in enumerate(words):
        if w.endswith(".gguf"):
            out.append("$GGUF")
        elif i == 0 and "/" in w:
            out.append(w.rsplit("/", 1)[-1])
        else:
            out.append(w)
    return " ".join(out)


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


# --- headline ------------------------------------------------------------------------------


def _target_text(value: float | None, fmt_str: str) -> str:
    return fmt_str.format(value) if value is not None else "–"


def _met(ok: bool | None, target) -> bool | None:
    return None if target is None else ok


def headline(r: dict, targets: Targets) -> list[list]:
    """The issue's workloads: AstrAI, llama.cpp, the ratio, the model's target and whether it is met."""
    rows: list[list] = []
    dec = r.get("decode") or {}
    a, ll = _dig(dec, "systems", "astrai", "best") or {}, _dig(dec, "systems", "llamacpp", "best") or {}
    ceiling = _gguf_ceiling(r)
    if a or ll:
        av, lv = a.get("decode_tok_s"), ll.get("decode_tok_s")
        x = _ratio(av, lv)
        goal = f">= {targets.decode_ratio:g}x"
        if targets.decode_stretch:
            goal += f" (stretch {targets.decode_stretch:g}x)"
        needed = targets.decode_ratio * lv if lv else None
        if targets.decode_ceiling_share is not None:
            goal += f", or >= {targets.decode_ceiling_share:.0%} of the read ceiling if that is lower"
            if needed is not None and ceiling:
                needed = min(needed, targets.decode_ceiling_share * ceiling)
        rows.append([f"Batch-1 decode, {_dig(dec, 'workload', 'prompt_tokens')}-token prompt, "
                     f"{_dig(dec, 'workload', 'decode_tokens')} tokens (tok/s; llama-bench tg)",
                     fmt(av), fmt(lv), fmt(x, 2, "x"), goal,
                     verdict(None if av is None or needed is None else av >= needed, r, "decode"),
                     load_text(r, "decode")])
        if ceiling:
            head = _dig(r, "roofline", "lm_head") or {}
            tied = f"; the tied {head['rows']:,}-token head is {head['bytes'] / MB:,.0f} MB of it" \
                if head.get("tied") else ""
            share = targets.decode_ceiling_share  # informative here; the decode row's verdict uses it
            rows.append([f"Batch-1 decode as a share of the read-bandwidth ceiling ({fmt(ceiling)} tok/s = "
                         f"{fmt(_dig(r, 'roofline', 'read_bandwidth_gbs'))} GB/s / "
                         f"{fmt(_gguf_bytes(r) / MB, 1)} MB of tensors per token{tied})",
                         fmt(100 * av / ceiling, 0, "%") if av else "–", fmt(100 * lv / ceiling, 0, "%") if lv else "–",
                         "–", _target_text(share, "(>= {:.0%}: the row above's alternative)"), "–",
                         load_text(r, "decode")])
    sv = r.get("serving") or {}
    levels = sv.get("levels") or {}
    one = levels.get("1") or {}
    if "systems" in one:
        a, ll = _dig(one, "systems", "astrai", "best") or {}, _dig(one, "systems", "llamacpp", "best") or {}
        x = _ratio(a.get("itl_p50_ms"), ll.get("itl_p50_ms"))
        t = targets.single_itl_ratio
        rows.append([f"One streaming user, {one['prompt_tokens']} in / {one['output_tokens']} out: "
                     "inter-token latency p50 (ms)", fmt(a.get("itl_p50_ms")), fmt(ll.get("itl_p50_ms")),
                     fmt(x, 2, "x"), _target_text(t, "<= {:g}x"),
                     verdict(_met(None if x is None else x <= (t or 0), t), r, "serving"), load_text(r, "serving")])
        rows.append(["One streaming user: output tok/s", fmt(a.get("output_tok_s")), fmt(ll.get("output_tok_s")),
                     fmt(_ratio(a.get("output_tok_s"), ll.get("output_tok_s")), 2, "x"), "–", "–",
                     load_text(r, "serving")])
    for level, target in (("16", targets.streams16_ratio), ("64", None)):
        lv = levels.get(level) or {}
        if "systems" not in lv:
            continue
        a, ll = _dig(lv, "systems", "astrai", "best") or {}, _dig(lv, "systems", "llamacpp", "best") or {}
        x = _ratio(a.get("output_tok_s"), ll.get("output_tok_s"))
        rows.append([f"{level} concurrent streams, {lv['prompt_tokens']} / {lv['output_tokens']}: output tok/s "
                     f"(llama-server -np {level})", fmt(a.get("output_tok_s")), fmt(ll.get("output_tok_s")),
                     fmt(x, 2, "x"), _target_text(target, ">= {:g}x"),
                     verdict(None if x is None or target is None else x >= target, r, "serving"),
                     load_text(r, "serving")])
        rows.append([f"{level} concurrent streams: TTFT p50 (ms)", fmt(a.get("ttft_p50_ms"), 0),
                     fmt(ll.get("ttft_p50_ms"), 0), fmt(_ratio(a.get("ttft_p50_ms"), ll.get("ttft_p50_ms")), 2, "x"),
                     "–", "–", load_text(r, "serving")])
    off = r.get("offline") or {}
    if "systems" in off:
        w = off["workload"]
        a, ll = _dig(off, "systems", "astrai"), _dig(off, "systems", "llamacpp")
        av = a.get("best_output_tok_s") if _ok(a) else None
        lv = ll.get("best_output_tok_s") if _ok(ll) else None
        x = _ratio(av, lv)
        if targets.offline_ratio is not None:
            goal, met = f">= {targets.offline_ratio:g}x", None if x is None else x >= targets.offline_ratio
        else:
            t = targets.offline_tok_s
            goal, met = _target_text(t, ">= {:,.0f} tok/s"), _met(None if av is None else av >= (t or 0), t)
        rows.append([f"Offline {w['batch']} x ({w['prompt_tokens']} -> {w['output_tokens']}): output tok/s "
                     "(llama-batched-bench)", fmt(av), fmt(lv), fmt(x, 2, "x"), goal, verdict(met, r, "offline"),
                     load_text(r, "offline")])
    long = sv.get("ttft_long") or {}
    if "systems" in long:
        a, ll = _dig(long, "systems", "astrai", "best") or {}, _dig(long, "systems", "llamacpp", "best") or {}
        x = _ratio(a.get("ttft_p50_ms"), ll.get("ttft_p50_ms"))
        rows.append([f"TTFT, {long['prompt_tokens']}-token prompt over HTTP, p50 (ms)", fmt(a.get("ttft_p50_ms"), 0),
                     fmt(ll.get("ttft_p50_ms"), 0), fmt(x, 2, "x"), f"<= {targets.ttft_ratio:g}x",
                     verdict(None if x is None else x <= targets.ttft_ratio, r, "serving"), load_text(r, "serving")])
    rows += _memory_rows(r, targets)
    rows += _perplexity_rows(r, targets)
    return rows


def _memory_rows(r: dict, targets: Targets) -> list[list]:
    mem = r.get("memory") or {}
    if not _ok(mem):
        return []
    rows = []
    load = mem.get("load") or {}
    if "added_bytes" in load:
        limit = load.get("target_bytes")
        rows.append([f"RSS added by loading the file (MB; the {load['file_bytes'] / MB:,.0f} MB GGUF, "
                     "`Engine.from_pretrained` in a fresh process)", fmt(load["added_bytes"] / MB, 0), "–", "–",
                     f"<= file + {load['target_overhead_bytes'] / MB:,.0f} MB = {limit / MB:,.0f} MB" if limit else "–",
                     _plain_verdict(None if limit is None else load["added_bytes"] <= limit), "–"])
    rss, budget = _dig(mem, "astrai_serve", "rss_bytes"), _dig(mem, "budget", "budget_bytes")
    ref = _dig(mem, "llama_server_np16", "rss_bytes")
    overhead = _dig(mem, "budget", "overhead_bytes") or targets.serve_overhead_bytes or 0
    rows.append(["Idle `astrai serve` resident memory (MB; llama-server -np 16 for reference)",
                 fmt(rss / MB if rss else None, 0), fmt(ref / MB if ref else None, 0), "–",
                 f"<= weights + KV pool + {overhead / MB:,.0f} MB = {fmt(budget / MB if budget else None, 0)} MB",
                 _plain_verdict(None if not (rss and budget) else rss <= budget), "–"])
    return rows


def _perplexity_rows(r: dict, targets: Targets) -> list[list]:
    px = r.get("perplexity") or {}
    if not _ok(px):
        return []
    ours, ref = _dig(px, "astrai", "served", "ppl"), _dig(px, "llama.cpp", "ppl")
    x = _ratio(ours, ref)
    tol = targets.perplexity_tolerance
    return [[f"Perplexity of `{px['text']}` (n_ctx {px['n_ctx']}, llama-perplexity's method; llama-perplexity)",
             fmt(ours, 3), fmt(ref, 3), fmt(x, 4, "x"), _target_text(tol, "within {:.0%}"),
             _plain_verdict(_met(None if x is None else abs(x - 1) <= (tol or 0), tol)), "–"]]


def _plain_verdict(met: bool | None) -> str:
    """For figures the machine's load cannot move (resident memory, perplexity)."""
    return "–" if met is None else "yes" if met else "no"


# --- detail sections -------------------------------------------------------------------------


def machine_section(r: dict) -> str:
    m = r["machine"]
    peers = r.get("peers") or {}
    llama = peers.get("llama_cpp") or {}
    cmake = llama.get("cmake") or {}
    isa = ", ".join(k.removeprefix("GGML_") for k, v in cmake.items() if k.startswith("GGML_") and v == "ON"
                    and k not in ("GGML_OPENMP",))
    rows = [["CPU", m["cpu_model"]], ["Cores", m["cores"]], ["Threads (AstrAI torch / llama.cpp -t)",
                                                              f"{m['torch_threads']} / {r.get('threads')}"],
            ["ISA", ", ".join(m["cpu_flags"])],
            ["AstrAI kernel variant", _dig(r, "roofline", "kernel_peaks", "variant") or "not recorded in this run"],
            ["Memory", fmt((m["memory_bytes"] or 0) / 2**30, 1, " GiB")],
            ["torch", m["torch"]], ["transformers", m["packages"].get("transformers")],
            ["llama.cpp", f"{llama.get('version') or '?'}, from the {llama.get('source') or '?'} sdist; "
                          f"{cmake.get('CMAKE_BUILD_TYPE', '?')}, static, GGML_NATIVE={cmake.get('GGML_NATIVE', '?')}, "
                          f"{isa or '?'}"],
            ["guidellm", peers.get("guidellm_version") or _status(peers.get("guidellm"))],
            ["AstrAI options", " ".join(r.get("astrai_args") or []) or "defaults"], ["Python", m["python"]],
            ["Load average at start / end", f"{', '.join(f'{x:.1f}' for x in m['load_average'] or [])} / "
                                            f"{', '.join(f'{x:.1f}' for x in r.get('load_average_end') or [])}"]]
    def outside(name: str) -> str:
        share = outside_cpu_share(r, name)
        return "–" if share is None else f"{share:.1%}"

    loads = [[name, *[", ".join(f"{x:.1f}" for x in la) for la in _loads(r, name)],
              fmt((r.get("section_seconds") or {}).get(name), 0, " s"), outside(name)] for name in (r.get("loads") or {})]
    out = ["## Machine", "", table(["", ""], rows), "", "Load average (1, 5, 15 min) at the start and end of each "
           "section, CPU " + m["cpu_model"] + "; 'Other CPU': the share of the machine's CPU time that processes "
           "other than the bench and its servers/clients used during the section (verdicts are called unreliable "
           f"above {OUTSIDE_CPU_LIMIT:.0%}):", "", table(["Section", "Start", "End", "Took", "Other CPU"], loads)]
    return "\n".join(out)


def roofline_section(r: dict) -> str:
    rf = r.get("roofline")
    if not rf:
        return ""
    if "ceilings" not in rf:
        return f"## Roofline\n\n{_status(rf)}"
    tf = ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in rf["matmul_tflops"].items())
    peaks = rf.get("kernel_peaks") or {}
    if "int8_macs_per_s" in peaks:
        tf += (f". AstrAI's {peaks['variant']} kernels: int8 {peaks['int8_macs_per_s'] / 1e12:.3f} TMAC/s, fp32 FMA "
               f"{peaks['fp32_flops_per_s'] / 1e12:.3f} TFLOP/s")
        if "bf16_dot_flops_per_s" in peaks:
            tf += f", bf16 dot {peaks['bf16_dot_flops_per_s'] / 1e12:.3f} TFLOP/s"
    by_type = ", ".join(f"{k} {v / MB:,.1f} MB" for k, v in rf["gguf_tensor_bytes"].items())
    head = rf.get("lm_head") or {}
    head_text = ""
    if head:
        head_text = (f" The LM head ({'the tied token embedding, ' if head['tied'] else ''}{head['type']} "
                     f"{head['rows']:,} x {head['cols']:,}) is {head['bytes'] / MB:,.1f} MB of the "
                     f"{sum(rf['gguf_tensor_bytes'].values()) / MB:,.1f} MB read per token (float32 would be "
                     f"{head['float32_bytes'] / MB:,.0f} MB).")
    return "\n".join(["## Roofline (measured on this machine, this run)", "",
                      f"Streaming read {fmt(rf['read_bandwidth_gbs'])} GB/s, copy {fmt(rf['copy_bandwidth_gbs'])} GB/s "
                      f"(read + write; {rf['bandwidth_test_bytes'] // 2**20} MiB tensors). Dense matmul "
                      f"({rf['matmul_n']}^3): {tf}. {model_title(r)}: {rf['num_parameters']:,} parameters; GGUF "
                      f"tensor data {by_type}.{head_text}", "",
                      table(["Weights read per token", "Bytes", "Batch-1 decode ceiling (tok/s)",
                             "Batched ceiling (tok/s)"],
                            [[k, f"{v['weight_bytes'] / MB:,.1f} MB", fmt(v["batch1_decode_tok_s"]),
                              fmt(v.get("batched_tok_s"))] for k, v in rf["ceilings"].items()]),
                      "", rf["note"]])


def _gguf_ceiling(r: dict) -> float | None:
    for k, v in (_dig(r, "roofline", "ceilings") or {}).items():
        if k.startswith("gguf"):
            return v["batch1_decode_tok_s"]
    return None


def _gguf_bytes(r: dict) -> float:
    for k, v in (_dig(r, "roofline", "ceilings") or {}).items():
        if k.startswith("gguf"):
            return v["weight_bytes"]
    return 0.0


def _batched_int8_ceiling(r: dict) -> float | None:
    for k, v in (_dig(r, "roofline", "ceilings") or {}).items():
        if k.startswith("int8 kernels"):
            return v["batched_tok_s"]
    return None


def decode_section(r: dict) -> str:
    dec = r.get("decode")
    if not dec:
        return ""
    if "systems" not in dec:
        return f"## Batch-1\n\n{_status(dec)}"
    w = dec["workload"]
    ceiling = _gguf_ceiling(r)
    prompts = [str(n) for n in w["prefill_prompts"]]
    headers = (["System", "Decode tok/s", "% of GGUF ceiling", "Decode tok/s at depth", "TTFT @prompt (ms)"]
               + [f"Prompt {n}: tok/s / TTFT ms" for n in prompts] + ["Rounds"])
    rows = []
    for key, s in dec["systems"].items():
        if not _ok(s):
            rows.append([key, _status(s)] + [""] * (len(headers) - 2))
            continue
        b = s.get("best") or s
        rows.append([s["name"], fmt(b.get("decode_tok_s")),
                     fmt(100 * b["decode_tok_s"] / ceiling, 0, "%") if ceiling and b.get("decode_tok_s") else "–",
                     fmt(b.get("decode_tok_s_at_depth")), fmt(b.get("ttft_ms"), 0)]
                    + [f"{fmt(_dig(b, 'prefill', n, 'prompt_tok_s'), 0)} / {fmt(_dig(b, 'prefill', n, 'ttft_ms'), 0)}"
                       for n in prompts] + [len(s.get("rounds") or []) or 1])
    cmds = sorted({t["command"] for rd in _dig(dec, "systems", "llamacpp", "rounds") or [] for t in rd["tests"]})
    return "\n".join(["## Batch-1 decode and prompt processing", "",
                      f"One request alone, greedy, ignore_eos: a {w['prompt_tokens']}-token random-id prompt, then "
                      f"{w['decode_tokens']} tokens; prompts of {', '.join(prompts)} tokens for prompt processing. "
                      f"AstrAI and llama-bench alternate for {w['rounds']} rounds, best round shown; {w['threads']} "
                      "threads each. llama-bench's tg is decode from an empty context ('at depth': after "
                      f"{w['prompt_tokens']} tokens, what AstrAI decodes after); its pp time stands in for TTFT. "
                      "transformers runs once.", "", table(headers, rows), "",
                      "llama.cpp commands: " + "; ".join(f"`llama-bench {short_command(c)}`" for c in cmds)
                      if cmds else ""])


def _serving_rows(level: dict) -> list[list]:
    rows = []
    for name, s in level["systems"].items():
        b = s.get("best") or {}
        runs = s.get("runs") or []
        errors = [x.get("reason") for x in runs if x.get("status") != "ok"]
        rows.append([name, f"{b.get('completed', 0)}/{level['requests']}", fmt(b.get("output_tok_s")),
                     f"{fmt(b.get('ttft_p50_ms'), 0)} / {fmt(b.get('ttft_p99_ms'), 0)}",
                     f"{fmt(b.get('itl_p50_ms'))} / {fmt(b.get('itl_p99_ms'))}", fmt(b.get("latency_p50_s"), 2),
                     len(runs), "; ".join(e[:120] for e in errors if e) or "–"])
    return rows


def serving_section(r: dict) -> str:
    sv = r.get("serving")
    if not sv:
        return ""
    if not _ok(sv):
        return f"## Serving\n\n{_status(sv)}"
    headers = ["Server", "Done", "Output tok/s", "TTFT p50 / p99 (ms)", "ITL p50 / p99 (ms)", "Latency p50 (s)",
               "Runs", "Errors"]
    out = ["## Serving over HTTP (guidellm, the same client and workload for both servers)", "",
           f"`astrai serve` (options: {' '.join(sv.get('astrai_args') or []) or 'defaults'}) and `llama-server -np N` "
           "(continuous batching, its default), both on 127.0.0.1 with the same GGUF and thread count; guidellm "
           "concurrent profile, synthetic prompts sized by the GGUF's tokenizer, max_tokens + ignore_eos, "
           "temperature 0, streaming. Servers alternate per round, best round shown; a fresh seed per run so no "
           "prompt repeats. ITL is guidellm's (last token - first token) / (tokens - 1) per request. guidellm runs "
           "on the same cores as the servers."]
    for level, lv in (sv.get("levels") or {}).items():
        out += ["", f"### Concurrency {level}", ""]
        out += [table(headers, _serving_rows(lv))] if "systems" in lv else [_status(lv)]
    long = sv.get("ttft_long")
    if long and "systems" in long:
        out += ["", f"### Time to first token, {long['prompt_tokens']}-token prompt (one request at a time, "
                f"{long['output_tokens']} output tokens, llama-server -np 1)", "", table(headers, _serving_rows(long))]
    rows = [[k, f"`{short_command(v.get('command', ''))}`", fmt(v.get("load_seconds"), 1),
             fmt((v.get("rss_after_load_bytes") or 0) / MB, 0), fmt((v.get("rss_after_runs_bytes") or 0) / MB, 0)]
            for k, v in (sv.get("servers") or {}).items()]
    out += ["", "Servers (RSS in MB):", "", table(["Server", "Command", "Load s", "RSS after load", "RSS after runs"],
                                                   rows)]
    return "\n".join(out)


def offline_section(r: dict) -> str:
    off = r.get("offline")
    if not off:
        return ""
    if "systems" not in off:
        return f"## Offline batch\n\n{_status(off)}"
    w = off["workload"]
    ceiling = _batched_int8_ceiling(r)

    def share(tok_s: float | None) -> str:
        return fmt(100 * tok_s / ceiling, 0, "%") if ceiling and tok_s else "–"

    rows = []
    for key, s in off["systems"].items():
        if not _ok(s):
            rows.append([key, _status(s), "", "", "", ""])
            continue
        if key == "llamacpp":
            runs = s["rounds"]
            rows.append([s["name"], fmt(s["best_output_tok_s"]), share(s["best_output_tok_s"]),
                         fmt(s["best_decode_tok_s"]), ", ".join(fmt(x["t"], 1) for x in runs), len(runs)])
        elif key == "astrai":
            runs = s["rounds"]
            rows.append([s["name"], fmt(s["best_output_tok_s"]), share(s["best_output_tok_s"]), "–",
                         ", ".join(fmt(x["seconds"], 1) for x in runs), len(runs)])
        else:
            rows.append([s["name"], fmt(s["output_tok_s"]), "–", "–", fmt(s["seconds"], 1), 1])
    cmd = _dig(off, "systems", "llamacpp", "rounds")
    return "\n".join(["## Offline batch", "",
                      f"{w['batch']} requests x ({w['prompt_tokens']} random-id prompt tokens -> {w['output_tokens']} "
                      "tokens), all submitted at once, greedy, ignore_eos. Output tok/s = requests x output tokens / "
                      "wall time including prefill. AstrAI: `Engine.generate`; llama.cpp: `llama-batched-bench` "
                      "(its decode-only rate S_TG shown too); transformers: one static batch, run once.", "",
                      table(["System", "Output tok/s", "% of int8 batched ceiling", "Decode-only tok/s",
                             "Seconds per round", "Rounds"], rows), "",
                      f"`llama-batched-bench {short_command(cmd[0]['command'])}`" if cmd else ""])


def memory_section(r: dict) -> str:
    mem = r.get("memory")
    if not mem:
        return ""
    if not _ok(mem):
        return f"## Memory\n\n{_status(mem)}"
    out = ["## Memory", ""]
    load = mem.get("load") or {}
    if "added_bytes" in load:
        head = load.get("lm_head") or {}
        rows = [["GGUF file", fmt(load["file_bytes"] / MB, 0)],
                ["RSS before loading (torch, AstrAI, kernel library)", fmt(load["baseline_rss_bytes"] / MB, 0)],
                ["RSS added by `Engine.from_pretrained`", fmt(load["added_bytes"] / MB, 0)],
                ["peak (VmHWM) above the baseline during the load", fmt(load["peak_added_bytes"] / MB, 0)],
                [f"tensors the engine holds ({load['weights']}; {load['forward']} forward, {load['kernels']})",
                 fmt(load["weight_bytes"] / MB, 0)],
                ["KV pool reserved (untouched until requests write it)", fmt(load["kv_pool_bytes"] / MB, 0)]]
        if head:
            what = "the tied token embedding, also the LM head" if head["tied"] else "the LM head"
            rows.insert(5, [f"of which {what}: {head['type']} {head['rows']:,} x {head['cols']:,}, held packed "
                            f"(float32: {head['float32_bytes'] / MB:,.0f} MB)", fmt(head["bytes"] / MB, 0)])
        if load.get("target_bytes"):
            rows.append([f"target: file + {load['target_overhead_bytes'] / MB:,.0f} MB", fmt(load["target_bytes"] / MB, 0)])
        out += ["Loading the file in a fresh process (`python -m bench.load_memory GGUF`): resident set before and "
                "after `Engine.from_pretrained` with the run's options.", "", table(["", "MB"], rows), ""]
    elif load:
        out += [f"Load measurement: {_status(load)}", ""]
    b = mem.get("budget") or {}
    rows = [["`astrai serve` idle RSS", fmt(_dig(mem, "astrai_serve", "rss_bytes") / MB
                                            if _dig(mem, "astrai_serve", "rss_bytes") else None, 0)],
            ["weights held by the engine", fmt(b.get("weight_bytes", 0) / MB, 0)],
            [f"KV pool ({b.get('num_pages')} pages x {b.get('page_size')} tokens, {b.get('dtype')})",
             fmt((b.get("kv_pool_bytes") or 0) / MB, 0)],
            [f"budget: weights + KV pool + {(b.get('overhead_bytes') or 0) / MB:,.0f} MB",
             fmt((b.get("budget_bytes") or 0) / MB, 0)]]
    for k in ("llama_server_np1", "llama_server_np16"):
        if k in mem:
            rows.append([f"{k.replace('_', '-').replace('-np', ' -np ')} idle RSS (reference)",
                         fmt(mem[k]["rss_bytes"] / MB, 0) if "rss_bytes" in mem[k] else _status(mem[k])])
    out += ["Idle `astrai serve`: resident set size (VmRSS) a few seconds after `/health` turned 200, no request "
            "sent; the budget's parts come from the same engine built in-process with the same options.", "",
            table(["", "MB"], rows)]
    return "\n".join(out)


def perplexity_section(r: dict) -> str:
    px = r.get("perplexity")
    if not px:
        return ""
    if not _ok(px):
        return f"## Perplexity\n\n{_status(px)}"
    described = {"served": "what `astrai serve` computes: {forward} forward ({kernels}), {weights}, {kv_dtype} KV",
                 "auto": "the same weights through the torch layers ({weights}), {kv_dtype} KV",
                 "none": "dequantized: {weights}, {kv_dtype} KV"}
    rows = []
    for variant, row in (px.get("astrai") or {}).items():
        label = f"AstrAI {variant}: " + described.get(variant, "").format(**row) if _ok(row) else f"AstrAI {variant}"
        rows.append([label, fmt(row.get("ppl"), 4) if _ok(row) else _status(row),
                     fmt(px.get(f"ratio_{variant}_vs_llama_cpp"), 4, "x")])
    for key in ("llama.cpp", "llama.cpp F32"):
        row = px.get(key)
        if row:
            rows.append([f"`{row['command']}`" if _ok(row) else key,
                         f"{fmt(row['ppl'], 4)} ± {fmt(row['stderr'], 4)}" if _ok(row) else _status(row), "–"])
    first = next(iter((px.get("astrai") or {}).values()), {})
    return "\n".join(["## Perplexity (llama-perplexity's method)", "",
                      f"`{px['text']}` ({first.get('tokens', '?')} tokens with BOS) in {first.get('chunks', '?')} "
                      f"windows of {px['n_ctx']} tokens, each starting at BOS from an empty cache; the second half of "
                      "each window scored. `python -m bench.gemma_perplexity` runs every variant on the Gemma file.",
                      "", table(["System", "PPL", "vs llama-perplexity on the file"], rows)])


def prefix_section(r: dict) -> str:
    px = r.get("prefix")
    if not px:
        return ""
    if "prefix_tokens" not in px:
        return f"## Prefix cache\n\n{_status(px)}"
    d = px.get("astrai") or {}
    rows = ([["AstrAI (radix prefix cache)", fmt(d["ttft_miss_ms"], 0), fmt(d["ttft_hit_ms"], 0),
              f"{d['hit_over_miss']:.3f}"]] if "ttft_hit_ms" in d else [["AstrAI", _status(d), "", ""]])
    out = ["## Prefix cache", "",
           f"A shared {px['prefix_tokens']}-token system prompt plus {px['question_tokens']}-token questions; "
           f"median TTFT over {px['trials']} requests each, one at a time.", "",
           table(["System", "TTFT miss (ms)", "TTFT hit (ms)", "hit / miss"], rows)]
    ev = px.get("eviction")
    if ev is not None:
        out += ["", "### Eviction policy (bench/cache_bench.py)", ""]
        if _ok(ev):
            flat = {k: v for k, v in ev.items() if k != "status"}
            out += [table(["Metric", "Value"], [[k, fmt(v, 3) if isinstance(v, float) else
                                                  f"`{json.dumps(v)}`" if isinstance(v, (dict, list)) else v]
                                                 for k, v in flat.items()])]
        else:
            out += [_status(ev)]
    return "\n".join(out)


STREAMS_TOLERANCE = 0.97  # "no slower" is called met down to this ratio (the control's 3% as well)


def speculation_section(r: dict) -> str:
    """Per workload: batch-1 tok/s with speculation off / suffix / ngram, 16 streams, llama.cpp's
    lookup decoding and plain decode on the same prompts, and the targets of issue 22."""
    sp = r.get("speculation")
    if not sp:
        return ""
    if "workloads" not in sp:
        return f"## Speculative decoding\n\n{_status(sp)}"
    w = sp["workload"]
    copy_heavy = set(w.get("copy_heavy", ()))
    rows, stream_rows = [], []
    for name, row in sp["workloads"].items():
        if "batch1" not in row:
            rows.append([name, _status(row)] + [""] * 9)
            continue
        b1, sp_up = row["batch1"], row.get("speedup", {})
        llama = row.get("llamacpp") or {}
        lookup, plain = llama.get("llama-lookup") or {}, llama.get("llama-lookup-plain") or {}
        target = ">= 2x" if name in copy_heavy else (">= 0.97x" if name == "open_chat" else "–")
        suffix = sp_up.get("suffix")
        met = "–" if target == "–" or suffix is None else (
            "yes" if suffix >= (2.0 if name in copy_heavy else 0.97) else "no")
        acc = b1["suffix"]["accepted_tokens"] / b1["suffix"]["draft_tokens"] if b1["suffix"]["draft_tokens"] else None
        rows.append([name, fmt(b1["off"]["tok_s"]), fmt(b1["suffix"]["tok_s"]), f"{fmt(suffix, 2)}x",
                     f"{fmt(sp_up.get('ngram'), 2)}x", fmt(acc, 2),
                     fmt(lookup.get("tok_s")) if _ok(lookup) else "–",
                     fmt(lookup.get("acceptance"), 2) if _ok(lookup) else "–",
                     fmt(plain.get("tok_s")) if _ok(plain) else "–", target, met,
                     "yes" if all((row.get("identical") or {}).values()) else "no"])
        streams = row.get("streams") or {}
        if streams:
            stream_rows.append([name, fmt(streams["off"]["tok_s"]), fmt(streams["suffix"]["tok_s"]),
                                f"{fmt(row.get('streams_ratio'), 2)}x",
                                "yes" if (row.get("streams_ratio") or 0) >= STREAMS_TOLERANCE else "no"])
    command = next((_dig(row, "llamacpp", "llama-lookup", "command") for row in sp["workloads"].values()
                    if _dig(row, "llamacpp", "llama-lookup", "command")), None)
    out = ["## Speculative decoding (issue 22)", "",
           f"bench/speculation_workloads.json, {w['variants']} prompt(s) per workload, greedy, up to "
           f"{w['max_tokens']} tokens, best of {w['rounds']} alternating round(s); batch-1 = decode tok/s of each "
           "request alone (tokens after the first / time from the first to the last). llama.cpp on the same "
           "chat-templated prompts: " + (f"`{short_command(command)}`" if command else "not run") +
           " and the same with `--spec-draft-n-max 0` (plain decoding). Load average: "
           f"{load_text(r, 'speculation')}. Learnt row / step cost ratio: {fmt(sp.get('cost_ratio'), 3)}; suffix store "
           f"{sp.get('suffix_store_tokens')} / {sp.get('suffix_store_capacity')} tokens.", "",
           table(["Workload", "off tok/s", "suffix tok/s", "suffix / off", "ngram / off", "accepted / drafted",
                  "llama-lookup tok/s", "lookup accept", "llama.cpp plain tok/s", "Target", "Met", "Same text"], rows),
           "", f"### {w['streams']} concurrent streams (output tok/s, target: no slower with speculation, "
               f"within {100 * (1 - STREAMS_TOLERANCE):.0f}% run-to-run noise)", "",
           table(["Workload", "off", "suffix", "suffix / off", "Met"], stream_rows)]
    return "\n".join(out)


def gpu_section(r: dict) -> str:
    g = r.get("gpu")
    if not g:
        return ""
    if not _ok(g):
        return f"## GPU\n\n{_status(g)}"
    rows = [[k, fmt(g[k].get("output_tok_s")) if _ok(g.get(k)) else _status(g.get(k))]
            for k in ("astrai", "transformers") if k in g]
    return "\n".join(["## GPU", "", f"{g['device']}: `{g['preset']}` with random bf16 weights, "
                      f"{g['workload']['num_requests']} requests; HBM copy {fmt(g['hbm_copy_bandwidth_gbs'])} GB/s; "
                      f"batch-1 at {fmt(100 * g.get('batch1_fraction_of_ceiling', float('nan')), 0)}% of the "
                      "bandwidth ceiling.", "", table(["System", "Output tok/s"], rows)])


def _profile_run(label: str, p: dict) -> list[str]:
    if "phases" not in p:
        return [f"### {label}", "", _status(p)]
    ph = p["phases"]
    out = [f"### {label}: batch {p['batch']} x (128 -> {p['tokens']})"]
    if "phases_ms" in ph:
        total = ph["wall_s"] * 1e3
        c, fb = ph.get("counts", {}), ph.get("full_batch_decode_steps") or {}
        out += ["", f"{c.get('steps', 0)} steps, {c.get('prefill_tokens', 0):,} prefill and "
                f"{c.get('decode_tokens', 0):,} decode tokens in {ph['wall_s']:.1f} s wall (torch profiler on); "
                f"median full-batch decode step {fmt(fb.get('median_step_ms'))} ms, of which forward "
                f"{fmt(fb.get('median_forward_ms'))} ms.", "",
                table(["Engine phase", "Seconds", "% of wall"],
                      [[k, fmt(v / 1e3, 2), fmt(100 * v / total, 1, "%")]
                       for k, v in sorted(ph["phases_ms"].items(), key=lambda kv: -kv[1])])]
    if ph.get("torch_ops"):
        out += ["", "torch operators by self CPU time:", "",
                table(["Op", "Self CPU (ms)", "%", "Calls"], [[f"`{o['op']}`", fmt(o["self_cpu_ms"], 0),
                                                               fmt(o.get("percent"), 1), o["calls"]]
                                                              for o in ph["torch_ops"][:15]])]
    spy = p.get("py_spy", {})
    if _ok(spy):
        out += ["", f"py-spy, {spy['total_samples']} samples of the {spy.get('scope', 'process')} — top self time:",
                "", table(["Frame", "% samples"], [[f"`{x['frame']}`", fmt(x["percent"])] for x in spy["self"][:10]])]
    elif spy:
        out += ["", f"py-spy: {_status(spy)}"]
    return out


def profile_section(r: dict) -> str:
    p = r.get("profile")
    if not p:
        return ""
    if "runs" not in p:
        return f"## Where AstrAI's time goes\n\n{_status(p)}"
    out = ["## Where AstrAI's time goes", "", f"{p['workload']}."]
    for label, run in p["runs"].items():
        out += [""] + _profile_run(label, run)
    return "\n".join(out)


def model_key(r: dict) -> str:
    """The result's model (results before --model existed ran the bundled default)."""
    return (r.get("model") or {}).get("key") or DEFAULT_MODEL


def model_title(r: dict) -> str:
    key = model_key(r)
    return MODELS[key].title if key in MODELS else (r.get("model") or {}).get("title") or key


def _demote(text: str) -> str:
    """Every heading one level down: a model's sections sit under its own heading."""
    return re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)


def render_model(r: dict, json_name: str) -> str:
    """One model's part of the page, from one run."""
    key = model_key(r)
    targets = bench_model(key).targets
    busy = [name for name in (r.get("loads") or {}) if overloaded(r, name)]
    flags = ("" if key == DEFAULT_MODEL else f" --model {key}") + (" --quick" if r["mode"] == "quick" else "")
    gguf = (r.get("model") or {}).get("gguf")
    head = [f"## {model_title(r)}", "",
            f"Generated by `python -m bench{flags}` on {r['started']} (commit {r['machine'].get('git_commit')})"
            f"{f', GGUF `{gguf}`' if gguf else ''}, every figure from "
            f"[`bench/results/{json_name}`](bench/results/{json_name}); the run took {r['elapsed_s'] / 60:.1f} min.", ""]
    if r["mode"] == "quick":
        head += ["**A `--quick` run: shortened workloads and one round each, for checking the suite, not for "
                 "comparing systems.**", ""]
    if busy:
        head += [f"**The machine was busy during {', '.join(busy)} (other processes above "
                 f"{OUTSIDE_CPU_LIMIT:.0%} of its {r['machine']['cores']} cores, or the 1-minute load average above "
                 "them): those numbers are not a fair comparison and no speed target is called met from them.**", ""]
    rows = headline(r, targets)
    if rows:
        head += [f"### Headline: AstrAI vs llama.cpp on the same GGUF (targets from {targets.source}; reported, "
                 "never asserted)", "",
                 table(["Workload", "AstrAI", "llama.cpp", "Ratio", "Target", "Met", "Load avg (1 min)"], rows), ""]
    sections = [machine_section(r), roofline_section(r), decode_section(r), serving_section(r), offline_section(r),
                memory_section(r), perplexity_section(r), prefix_section(r), speculation_section(r), gpu_section(r),
                profile_section(r)]
    return "\n".join(head) + "\n" + "\n\n".join(_demote(s) for s in sections if s)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (but - and _), spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def render(runs: list[tuple[dict, str]]) -> str:
    """The page: one part per model (in MODELS order), each from its own run."""
    runs = sorted(runs, key=lambda run: list(MODELS).index(model_key(run[0])) if model_key(run[0]) in MODELS else 99)
    titles = " · ".join(f"[{model_title(r)}](#{_anchor(model_title(r))})" for r, _ in runs)
    head = ["# AstrAI benchmarks", "",
            f"One part per model, each from its own run of the suite on that model's GGUF: {titles}. Peers: "
            "`bench/setup_peers.sh`. Regenerate with `hatch run dev:bench` (the bundled SmolLM2) and "
            "`hatch run dev:bench --model gemma3-270m`; each run replaces its model's part and keeps the others "
            "(their latest full run in `bench/results/`).", ""]
    return "\n".join(head) + "\n" + "\n\n".join(render_model(r, name) for r, name in runs) + "\n"


FORMAT_VERSION = 2  # results of the llama-cpp-python suite (version 1) are in git history only


def read_result(path: Path) -> dict:
    r = json.loads(path.read_text())
    if r.get("format") != "astrai-bench" or r.get("version") != FORMAT_VERSION:
        raise SystemExit(f"{path} is not an astrai-bench result of format version {FORMAT_VERSION} "
                         f"(found {r.get('format')!r} version {r.get('version')!r}); re-run the suite")
    return r


def latest_results(results_dir: Path) -> dict[str, Path]:
    """Per model, the result in results_dir of a full run (else a quick one) with the most
    sections (a run with --only never displaces a whole one), the newest among equals (file
    names start with the run's UTC time, so name order is time order)."""
    best: dict[str, tuple[bool, int, str, Path]] = {}
    for path in results_dir.glob("*.json"):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if r.get("format") != "astrai-bench" or r.get("version") != FORMAT_VERSION or "elapsed_s" not in r:
            continue
        rank = (r.get("mode") == "full", len(r.get("sections") or []), path.name, path)
        key = model_key(r)
        if key not in best or rank[:3] > best[key][:3]:
            best[key] = rank
    return {key: rank[3] for key, rank in best.items()}


def write(result_paths: list[Path], out_path: Path, results_dir: Path) -> list[Path]:
    """BENCHMARKS.md from the given results (one per model) plus, for every other model, its
    latest result in results_dir; returns the results used."""
    chosen: dict[str, Path] = {}
    for path in result_paths:
        key = model_key(read_result(path))
        if key in chosen:
            raise SystemExit(f"{chosen[key].name} and {path.name} are both results for {key}: give one per model")
        chosen[key] = path
    for key, path in latest_results(results_dir).items():
        chosen.setdefault(key, path)
    runs = [(read_result(path), path.name) for path in chosen.values()]
    out_path.write_text(render(runs))
    return list(chosen.values())
