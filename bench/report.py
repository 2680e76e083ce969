"""BENCHMARKS.md, generated from one run's JSON: every figure on the page comes from it."""

from __future__ import annotations

import json
import math
from pathlib import Path

PEERS = {"llamacpp_sequential": "llama.cpp", "transformers_static_bfloat16": "HF bf16",
         "transformers_static_float32": "HF fp32"}


def fmt(v, digits: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.2f}x"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ok(d) -> bool:
    return isinstance(d, dict) and d.get("status") == "ok"


def _status(d) -> str:
    return f"{d.get('status')}: {d.get('reason', '')}" if isinstance(d, dict) else "not run"


def machine_section(r: dict) -> str:
    m, rf = r["machine"], r.get("roofline")
    rows = [["CPU", m["cpu_model"]], ["Cores", m["cores"]], ["torch threads", m["torch_threads"]],
            ["ISA", ", ".join(m["cpu_flags"])], ["Memory", fmt((m["memory_bytes"] or 0) / 2**30, 1, " GiB")],
            ["torch", m["torch"]], ["transformers", m["packages"].get("transformers")],
            ["llama-cpp-python", m["packages"].get("llama_cpp_python")], ["Python", m["python"]],
            ["Load average at start", ", ".join(f"{x:.1f}" for x in m["load_average"] or [])],
            ["Load average at end", ", ".join(f"{x:.1f}" for x in r.get("load_average_end") or [])]]
    out = ["## Machine", "", table(["", ""], rows)]
    if rf:
        out += ["", "## Roofline (measured on this machine, this run)", "",
                f"Memory copy bandwidth {fmt(rf['copy_bandwidth_gbs'], 1)} GB/s (read + write, "
                f"{rf['bandwidth_test_bytes'] // 2**20} MiB tensors; streaming read "
                f"{fmt(rf['read_bandwidth_gbs'], 1)} GB/s). Matmul ({rf['matmul_n']}^3): bf16 "
                f"{fmt(rf['matmul_tflops']['bfloat16'], 3)} TFLOP/s, fp32 "
                f"{fmt(rf['matmul_tflops']['float32'], 3)} TFLOP/s. "
                f"SmolLM2-135M: {rf['num_parameters']:,} parameters ({rf['num_parameters_source']}).", "",
                table(["Weights", "Bytes per decode step", "Batch-1 decode ceiling (tok/s)",
                       "Batched ceiling (tok/s)"],
                      [[k, f"{v['weight_bytes'] / 1e6:,.0f} MB", fmt(v["batch1_decode_tok_s"]),
                        fmt(v.get("batched_tok_s"))] for k, v in rf["ceilings"].items()]),
                "", rf["note"]]
    return "\n".join(out)


def offline_section(r: dict) -> str:
    off = r.get("offline")
    if not off:
        return ""
    if "systems" not in off:
        return f"## Offline throughput\n\n{_status(off)}"
    w, systems = off["workload"], off["systems"]
    ceil = (r.get("roofline") or {}).get("ceilings", {})
    peer_tps = {k: systems[k]["output_tok_s"] for k in PEERS if _ok(systems.get(k))}
    headers = ["System", "Requests", "Prompt tok", "Output tok", "Seconds", "Output tok/s",
               "Total tok/s", "% batched ceiling"] + [f"vs {PEERS[k]}" for k in peer_tps]
    rows, notes = [], []
    for key, s in systems.items():
        if not _ok(s):
            rows.append([key, _status(s)] + [""] * (len(headers) - 2))
            continue
        dtype = "bfloat16" if "bfloat16" in key else "float32" if "float32" in key else None
        batched = ceil.get(dtype, {}).get("batched_tok_s") if dtype else None
        pct = fmt(100 * s["total_tok_s"] / batched, 0, "%") if batched else "–"
        rows.append([s["name"] + (" *" if s["subset"] else ""), s["num_requests"], f"{s['prompt_tokens']:,}",
                     f"{s['output_tokens']:,}", fmt(s["seconds"]), fmt(s["output_tok_s"]),
                     fmt(s["total_tok_s"]), pct]
                    + [ratio(s["output_tok_s"], peer_tps[k]) if not key.startswith(k) else "1.00x"
                       for k in peer_tps])
        notes += [f"- {s['name']}: {n}" for n in s.get("notes", [])]
    return "\n".join([
        "## Offline throughput", "",
        f"{w['num_requests']} requests, prompts uniform {w['prompt_len'][0]}-{w['prompt_len'][1]} random "
        f"token ids, outputs uniform {w['output_len'][0]}-{w['output_len'][1]} tokens (ignore_eos), "
        f"temperature {w['temperature']}, seed {w['seed']}; batch size {w['batch_size']}. Totals: "
        f"{w['prompt_tokens']:,} prompt and {w['output_tokens']:,} output tokens. Output tok/s counts "
        "only the tokens each request asked for. Ratios compare output tok/s.", "",
        table(headers, rows), "",
        "\\* ran a fixed leading subset of the requests (too slow for the whole workload in the time "
        "budget); its tok/s is measured on that subset." if any(_ok(s) and s["subset"] for s in systems.values()) else "",
        "", "\n".join(notes)])


def latency_section(r: dict) -> str:
    lat = r.get("latency")
    if not lat:
        return ""
    if "systems" not in lat:
        return f"## Batch-1 latency\n\n{_status(lat)}"
    ceil = (r.get("roofline") or {}).get("ceilings", {})
    prompts = sorted({int(p) for s in lat["systems"].values() if _ok(s) for p in s["prompts"]})
    headers = (["System"] + [f"TTFT {p} (ms)" for p in prompts] + [f"Decode tok/s @{p}" for p in prompts]
               + ["% of own batch-1 ceiling", "% of bf16 batch-1 ceiling"])
    rows = []
    bf16_ceiling = ceil.get("bfloat16", {}).get("batch1_decode_tok_s")
    for key, s in lat["systems"].items():
        if not _ok(s):
            rows.append([key, _status(s)] + [""] * (len(headers) - 2))
            continue
        p = s["prompts"]
        own = ("q4_1_gguf" if "llamacpp" in key else "bfloat16" if "bfloat16" in key else "float32")
        own_ceiling = ceil.get(own, {}).get("batch1_decode_tok_s")
        first = p[str(prompts[0])]["decode_tok_s"]
        rows.append([s["name"]] + [fmt(p[str(n)]["ttft_s"] * 1e3, 0) for n in prompts]
                    + [fmt(p[str(n)]["decode_tok_s"]) for n in prompts]
                    + [fmt(100 * first / own_ceiling, 0, "%") if own_ceiling else "–",
                       fmt(100 * first / bf16_ceiling, 0, "%") if bf16_ceiling else "–"])
    return "\n".join(["## Batch-1 latency", "",
                      f"One request alone, greedy; decode rate over {lat['decode_tokens']} tokens after the "
                      "first. Ceiling percentages use the decode rate after the shortest prompt. llama.cpp's "
                      "worker threads spin-wait at every barrier, so when other processes share the two cores "
                      "its figures collapse far below what it reaches on an idle machine; compare it only "
                      "with the load average in mind.", "",
                      table(headers, rows)])


def serving_section(r: dict) -> str:
    sv = r.get("serving")
    if not sv:
        return ""
    if not _ok(sv) or "modes" not in sv:
        return f"## Serving\n\n{_status(sv)}"
    headers = ["Rate (req/s)", "Mode", "Done", "Req/s", "Out tok/s", "TTFT p50/p99 (ms)",
               "TPOT p50/p99 (ms)", "ITL p50/p99 (ms)", "E2E p99 (ms)"]
    rows = []
    modes = sv["modes"]
    rates = sorted({float(x) for m in modes.values() if _ok(m) for x in m["rates"]})
    for rate in rates:
        for mode, m in modes.items():
            if not _ok(m):
                continue
            s = m["rates"].get(str(rate), {})
            if s.get("status") != "ok" or "ttft_p50_ms" not in s:
                rows.append([rate, mode, _status(s)] + [""] * 6)
                continue
            rows.append([rate, mode, f"{s['completed']}/{s['scheduled']}", fmt(s["request_throughput"], 2),
                         fmt(s["output_token_throughput"]),
                         f"{fmt(s['ttft_p50_ms'], 0)} / {fmt(s['ttft_p99_ms'], 0)}",
                         f"{fmt(s['tpot_p50_ms'], 0)} / {fmt(s['tpot_p99_ms'], 0)}",
                         f"{fmt(s['itl_p50_ms'], 0)} / {fmt(s['itl_p99_ms'], 0)}", fmt(s["e2e_p99_ms"], 0)])
    skipped = [f"- {mode}: {_status(m)}" for mode, m in modes.items() if not _ok(m)]
    return "\n".join(["## Serving (Poisson arrivals, streaming HTTP)", "",
                      f"A fresh `astrai serve` per mode and rate on 127.0.0.1; up to {sv['requests_per_rate']} "
                      f"requests arriving within {sv['window_s']:.0f} s, prompts of random common words, "
                      "greedy, outputs of the scheduled length. TPOT = (E2E - TTFT) / (tokens - 1).", "",
                      table(headers, rows), "", "\n".join(skipped)])


def prefix_section(r: dict) -> str:
    px = r.get("prefix")
    if not px:
        return ""
    if "prefix_tokens" not in px:
        return f"## Prefix cache\n\n{_status(px)}"
    rows = []
    for key, name in (("astrai", "AstrAI (radix prefix cache)"), ("llamacpp", "llama.cpp (previous-call reuse)")):
        d = px.get(key)
        if d is None:
            continue
        if "ttft_hit_ms" in d:
            rows.append([name, fmt(d["ttft_miss_ms"], 0), fmt(d["ttft_hit_ms"], 0), f"{d['hit_over_miss']:.3f}"])
        else:
            rows.append([name, _status(d), "", ""])
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


def profile_section(r: dict) -> str:
    p = r.get("profile")
    if not p:
        return ""
    if "workload" not in p:
        return f"## Where AstrAI's time goes\n\n{_status(p)}"
    out = ["## Where AstrAI's time goes", "", f"{p['workload']} ({p['requests']} requests)."]
    ph = p.get("phases", {})
    if "phases_ms" in ph:
        total = ph["wall_s"] * 1e3
        rows = [[k, fmt(v / 1e3, 2), fmt(100 * v / total, 1, "%")]
                for k, v in sorted(ph["phases_ms"].items(), key=lambda kv: -kv[1])]
        c = ph.get("counts", {})
        out += ["", f"Engine phases from its trace events: {c.get('steps', 0)} steps, "
                f"{c.get('prefill_tokens', 0):,} prefill and {c.get('decode_tokens', 0):,} decode tokens "
                f"in {ph['wall_s']:.1f} s wall (schedule, build_batch, forward and sample are disjoint).", "",
                table(["Phase", "Seconds", "% of wall"], rows)]
    spy = p.get("py_spy", {})
    if _ok(spy):
        out += ["", f"py-spy, {spy['total_samples']} samples of the {spy.get('scope', 'process')} — top self time:", "",
                table(["Frame", "% samples"], [[f"`{x['frame']}`", fmt(x["percent"])] for x in spy["self"][:12]]),
                "", "Top inclusive time:", "",
                table(["Frame", "% samples"], [[f"`{x['frame']}`", fmt(x["percent"])] for x in spy["inclusive"][:12]])]
    elif spy:
        out += ["", f"py-spy: {_status(spy)}"]
    ops = p.get("torch_ops", {})
    if _ok(ops) and ops.get("ops"):
        out += ["", f"torch operators by self CPU time ({ops['requests']} requests, {ops['wall_s']:.1f} s wall):", "",
                table(["Op", "Self CPU (ms)", "Calls"], [[f"`{o['op']}`", fmt(o["self_cpu_ms"], 0), o["calls"]]
                                                          for o in ops["ops"][:15]])]
    return "\n".join(out)


def _peer_verdict(met: bool, r: dict, peers: list[dict]) -> str:
    """yes/no for a ratio against peers, saying why a "yes" cannot be trusted when it cannot:
    a peer measured on a subset, or a machine busier than its cores (spin-waiting peers collapse)."""
    if not met:
        return "no"
    caveats = []
    if any(p.get("subset") for p in peers):
        caveats.append("peer ran a subset")
    load, cores = (r.get("machine") or {}).get("load_average"), (r.get("machine") or {}).get("cores")
    if load and cores and load[0] > cores:
        caveats.append(f"load {load[0]:.1f} on {cores} cores")
    return f"yes, unreliable ({'; '.join(caveats)})" if caveats else "yes"


def targets(r: dict) -> list[list]:
    """The issue's targets: measured value and whether it is met (reported, never asserted)."""
    rows = []
    off = (r.get("offline") or {}).get("systems", {})
    # the headline: AstrAI continuous bf16 on the whole workload
    head = off.get("astrai_continuous_bfloat16", {})
    best = head.get("output_tok_s") if _ok(head) else None
    llama = off.get("llamacpp_sequential", {})
    if best and _ok(llama):
        x = best / llama["output_tok_s"]
        rows.append(["Offline (AstrAI continuous bf16) >= 20x llama.cpp sequential", f"{x:.2f}x",
                     _peer_verdict(x >= 20, r, [llama])])
    hf = [s for k, s in off.items() if k.startswith("transformers") and _ok(s)]
    if best and hf:
        x = best / max(s["output_tok_s"] for s in hf)
        rows.append(["Offline (AstrAI continuous bf16) >= 4x transformers static (best dtype)", f"{x:.2f}x",
                     _peer_verdict(x >= 4, r, hf)])
    lat = (r.get("latency") or {}).get("systems", {}).get("astrai_continuous_bfloat16")
    ceiling = ((r.get("roofline") or {}).get("ceilings", {}).get("bfloat16") or {}).get("batch1_decode_tok_s")
    if _ok(lat) and ceiling:
        first = lat["prompts"][min(lat["prompts"], key=int)]["decode_tok_s"]
        x = first / ceiling
        rows.append(["Batch-1 decode >= 90% of bf16 bandwidth ceiling", f"{100 * x:.0f}%", "yes" if x >= 0.9 else "no"])
    sv = r.get("serving") or {}
    modes = sv.get("modes", {}) if _ok(sv) else {}
    if _ok(modes.get("continuous")) and _ok(modes.get("static")):
        best_row = None
        for rate, c in modes["continuous"]["rates"].items():
            s = modes["static"]["rates"].get(rate, {})
            if "output_token_throughput" in c and "output_token_throughput" in s:
                x = c["output_token_throughput"] / s["output_token_throughput"]
                p99_ok = c["e2e_p99_ms"] <= s["e2e_p99_ms"]
                if best_row is None or x > best_row[0]:
                    best_row = (x, rate, p99_ok)
        if best_row:
            x, rate, p99_ok = best_row
            rows.append(["Continuous >= 3.4x static under Poisson load, p99 no worse",
                         f"{x:.2f}x at {rate} req/s (E2E p99 {'no worse' if p99_ok else 'worse'})",
                         "yes" if x >= 3.4 and p99_ok else "no"])
    px = (r.get("prefix") or {}).get("astrai", {})
    if "hit_over_miss" in px:
        x = px["hit_over_miss"]
        rows.append(["Prefix-cache TTFT hit <= 1/10 of a miss", f"{x:.3f}", "yes" if x <= 0.1 else "no"])
    return rows


def render(r: dict, json_name: str) -> str:
    head = ["# AstrAI benchmarks", "",
            f"Generated by `python -m bench{' --quick' if r['mode'] == 'quick' else ''}` "
            f"on {r['started']} (commit {r['machine'].get('git_commit')}), every figure from "
            f"[`bench/results/{json_name}`](bench/results/{json_name}); the run took "
            f"{r['elapsed_s'] / 60:.1f} min. Regenerate with `hatch run bench` (peers: `bench/setup_peers.sh`).",
            "", "The machine is a 2-core VM shared with other jobs while this ran; the load average "
            "below shows how busy it was. Treat small differences as noise.", ""]
    rows = targets(r)
    if rows:
        head += ["## Targets (from the issue; reported, not asserted)", "",
                 table(["Target", "Measured", "Met"], rows), ""]
    sections = [machine_section(r), offline_section(r), latency_section(r), serving_section(r),
                prefix_section(r), gpu_section(r), profile_section(r)]
    return "\n".join(head) + "\n" + "\n\n".join(s for s in sections if s) + "\n"


def write(result_path: Path, out_path: Path) -> None:
    r = json.loads(result_path.read_text())
    out_path.write_text(render(r, result_path.name))
