"""Serving: Poisson arrivals against a real `astrai serve`, streamed over HTTP.

For each rate, continuous and static scheduling each get their own fresh server and the
same arrival schedule. A rate is bounded in requests and in time: arrivals stop after the
window and stragglers are cancelled after a grace period (counted as incomplete).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import traceback
from itertools import pairwise

import httpx

from bench.context import Context
from bench.model_info import gguf_path
from bench.progress import bar, log
from bench.server_process import AstraiServer
from bench.systems.astrai import pages_for
from bench.timing import percentile

WORDS = ("time person year way day thing man world life hand part child eye woman place work "
         "week case point government company number group problem fact water room mother area "
         "money story month lot right study book job word business issue side kind head house "
         "service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office "
         "door health art war history party result change morning reason research girl guy "
         "moment air teacher force education garden river mountain music market ocean").split()


def make_schedule(ctx: Context, rate: float, seed: int) -> list[dict]:
    """Arrival offsets (seconds) with exponential gaps, plus each request's prompt and length."""
    rng = random.Random(seed)
    s, t, out = ctx.scale, 0.0, []
    for _ in range(s.serving_requests):
        t += rng.expovariate(rate)
        if t > s.serving_window_s:
            break
        words = [rng.choice(WORDS) for _ in range(rng.randint(*s.serving_prompt_words))]
        out.append({"at": t, "prompt": " ".join(words), "max_tokens": rng.randint(*s.serving_output_len)})
    return out


async def _one(client: httpx.AsyncClient, model: str, item: dict, t0: float, extra: dict) -> dict:
    await asyncio.sleep(max(0.0, t0 + item["at"] - time.perf_counter()))
    body = {"model": model, "prompt": item["prompt"], "max_tokens": item["max_tokens"],
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    sent = time.perf_counter()
    stamps: list[float] = []
    usage = None
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            return {"ok": False, "error": f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"}
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            if any(c.get("text") for c in chunk.get("choices", [])):
                stamps.append(time.perf_counter())
    if not stamps:
        return {"ok": False, "error": "no tokens streamed"}
    n_out = (usage or {}).get("completion_tokens") or len(stamps)
    e2e = stamps[-1] - sent
    return {"ok": True, "sent": sent, "done": stamps[-1], "ttft": stamps[0] - sent, "e2e": e2e,
            "tpot": (e2e - (stamps[0] - sent)) / (n_out - 1) if n_out > 1 else None,
            "itl": [b - a for a, b in pairwise(stamps)], "output_tokens": n_out,
            "prompt_tokens": (usage or {}).get("prompt_tokens")}


def _summary(results: list[dict], scheduled: int, rate: float) -> dict:
    ok = [r for r in results if r.get("ok")]
    out = {"rate": rate, "scheduled": scheduled, "completed": len(ok),
           "failed": [r["error"] for r in results if not r.get("ok")][:5]}
    if not ok:
        return out
    duration = max(r["done"] for r in ok) - min(r["sent"] for r in ok)
    itl = [x for r in ok for x in r["itl"]]
    tpot = [r["tpot"] for r in ok if r["tpot"] is not None]
    out.update(
        duration_s=duration,
        request_throughput=len(ok) / duration,
        output_token_throughput=sum(r["output_tokens"] for r in ok) / duration,
        output_tokens=sum(r["output_tokens"] for r in ok),
        prompt_tokens=sum(r["prompt_tokens"] or 0 for r in ok),
    )
    for name, values in (("ttft", [r["ttft"] for r in ok]), ("tpot", tpot), ("itl", itl),
                         ("e2e", [r["e2e"] for r in ok])):
        out[f"{name}_p50_ms"] = _ms(percentile(values, 50))
        out[f"{name}_p99_ms"] = _ms(percentile(values, 99))
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


async def _drive(base_url: str, schedule: list[dict], rate: float, grace_s: float, desc: str) -> dict:
    limits = httpx.Limits(max_connections=len(schedule) + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=None, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        extra = await _probe_extras(client, model)
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(_one(client, model, item, t0, extra)) for item in schedule]
        deadline = (schedule[-1]["at"] if schedule else 0) + grace_s
        results = []
        with bar(total=len(tasks), desc=desc, unit="req") as pbar:
            for fut in asyncio.as_completed(tasks, timeout=deadline):
                try:
                    results.append(await fut)
                except asyncio.TimeoutError:
                    break
                except Exception as error:  # a dropped stream is a failed request, not a crash
                    results.append({"ok": False, "error": f"{type(error).__name__}: {error}"})
                pbar.update(1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        missing = len(schedule) - len(results)
        results += [{"ok": False, "error": "not finished within the time bound"}] * missing
        summary = _summary(results, len(schedule), rate)
        summary["extra_body"] = extra
        return summary


async def _probe_extras(client: httpx.AsyncClient, model: str) -> dict:
    """Use vLLM's ignore_eos extension when the server accepts it, so lengths are as scheduled."""
    body = {"model": model, "prompt": "hello", "max_tokens": 2, "ignore_eos": True}
    resp = await client.post("/v1/completions", json=body)
    return {"ignore_eos": True} if resp.status_code == 200 else {}


def _server_args(scheduling: str, ctx: Context) -> list[str]:
    """`astrai serve` options, the same for both modes; the KV pool is sized for a full batch so
    neither mode is limited by the shared machine's memory."""
    s = ctx.scale
    max_len = s.serving_prompt_words[1] * 3 + s.serving_output_len[1] + 16
    return ["--dtype", "bfloat16", "--max-num-seqs", str(s.batch_size), "--max-model-len", str(max_len),
            "--num-pages", str(pages_for(s.batch_size, max_len)), "--max-queue", "1024",
            "--log-level", "warning", "--scheduling", scheduling]


def run(ctx: Context) -> dict:
    out = {"status": "ok", "batch_size": ctx.scale.batch_size, "window_s": ctx.scale.serving_window_s,
           "requests_per_rate": ctx.scale.serving_requests, "modes": {}}
    grace = ctx.scale.serving_window_s * 2
    for mode in ("continuous", "static"):
        args = _server_args(mode, ctx)
        rates = {}
        for i, rate in enumerate(ctx.scale.serving_rates):
            schedule = make_schedule(ctx, rate, seed=100 + i)
            if ctx.out_of_time():
                rates[str(rate)] = {"status": "skipped", "reason": ctx.out_of_time()}
                continue
            try:
                with AstraiServer(str(gguf_path()), args) as server:
                    log(f"[serving] {mode} @ {rate} req/s: {len(schedule)} requests")
                    summary = asyncio.run(_drive(server.base_url, schedule, rate, grace,
                                                 f"serve {mode} {rate}/s"))
                    summary["status"] = "ok"
            except Exception as error:
                summary = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                           "traceback": traceback.format_exc(limit=4)}
            log(f"[serving] {mode} @ {rate}: {_brief(summary)}")
            rates[str(rate)] = summary
        out["modes"][mode] = {"status": "ok", "launcher": "astrai serve", "server_args": args, "rates": rates}
    return out


def _brief(s: dict) -> str:
    if s.get("status") != "ok" or "ttft_p50_ms" not in s:
        return s.get("reason") or f"{s.get('completed', 0)} completed; {s.get('failed')}"
    return (f"{s['completed']}/{s['scheduled']} done, {s['output_token_throughput']:.1f} tok/s, "
            f"TTFT p50 {s['ttft_p50_ms']:.0f} ms p99 {s['ttft_p99_ms']:.0f} ms")
