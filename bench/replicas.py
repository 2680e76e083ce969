"""Engine replicas on Ray Serve: throughput with 1 vs 2 replicas, and prefix-aware vs round-robin routing.

    python -m bench.replicas            # ~15 min on the busy 2-core dev VM (three servers start)
    python -m bench.replicas --quick    # smaller workloads

Every number comes from real `astrai serve` processes on 127.0.0.1 driven over HTTP:

- throughput: the same batch of concurrent completions (random prompts, ignore_eos) against
  `astrai serve` (one plain process, torch's default threads, then one thread) and `astrai serve
  --replicas 2` (one thread each); output tokens per second of wall time. On a 2-core machine
  two replicas split the same two cores, so expect no gain on an idle machine: replicas pay off
  with one machine or GPU each. On a busy one, one process's multi-threaded matmuls suffer
  most from other jobs taking its cores (threads wait for each other): the one-thread run
  tells that apart from what replicas add.
- prefix-cache hit rate: several long system prompts, each shared by many requests in shuffled
  order, sent one at a time to `--replicas 2 --routing prefix` and to
  `--replicas 2 --routing round-robin`; hit rate = prompt tokens served from the radix cache /
  prompt tokens looked up, summed over the replicas from /metrics. One plain process (every
  prefix in one cache) is the ceiling.

Writes bench/results/<UTC time>-replicas[-quick].json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.server_process import AstraiServer

MODEL = "smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results"
TOKEN_RANGE = (100, 40000)  # ordinary vocabulary ids of SmolLM2, away from special tokens


@dataclass(frozen=True)
class Scale:
    throughput_requests: int = 32
    throughput_concurrency: int = 16
    prompt_len: tuple[int, int] = (32, 128)
    output_len: int = 32
    systems: int = 6  # distinct system prompts
    system_len: int = 256
    per_system: int = 6  # requests sharing each system prompt
    question_len: int = 16
    prefix_concurrency: int = 1  # one at a time: the hit rate then depends on routing only, not on races
    prefix_output_len: int = 4


QUICK = Scale(throughput_requests=16, throughput_concurrency=8, output_len=16, systems=4, per_system=4)


def server_args(replicas: int, routing: str) -> list[str]:
    common = ["--dtype", "float32", "--max-num-seqs", "16", "--max-model-len", "1024", "--log-level", "warning"]
    if replicas == 1:
        return common
    return [*common, "--replicas", str(replicas), "--routing", routing]


def wait_replicas(server: AstraiServer, replicas: int, timeout_s: float = 600.0) -> None:
    """/health is 200 once one replica runs; wait for all of them."""
    if replicas == 1:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(server.base_url + "/health", timeout=30).json()
        if sum(1 for r in body.get("replicas", []) if r["state"] == "running") == replicas:
            return
        time.sleep(1.0)
    raise RuntimeError(f"only some of {replicas} replicas came up: {server.tail()}")


def scraped(base_url: str, name: str) -> float:
    """Sum of every sample of a metric (over replicas, when labelled per replica)."""
    total = 0.0
    for line in httpx.get(base_url + "/metrics", timeout=30).text.splitlines():
        match = re.match(r"^([\w:]+)(?:\{.*\})? (\S+)$", line)
        if match and match.group(1) == name:
            total += float(match.group(2))
    return total


async def _complete(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> dict:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    reply = await client.post("/v1/completions", json=body)
    reply.raise_for_status()
    usage = reply.json()["usage"]
    return {"replica": reply.headers.get("x-astrai-replica"), "completion_tokens": usage["completion_tokens"],
            "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"], "prompt_tokens": usage["prompt_tokens"]}


async def _drive(base_url: str, prompts: list[list[int]], max_tokens: int, concurrency: int) -> tuple[list[dict], float]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        async def one(prompt: list[int]) -> dict:
            async with gate:
                return await _complete(client, prompt, max_tokens)

        start = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in prompts))
        return list(results), time.perf_counter() - start


def throughput_prompts(scale: Scale, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(*TOKEN_RANGE) for _ in range(rng.randint(*scale.prompt_len))]
            for _ in range(scale.throughput_requests)]


def prefix_prompts(scale: Scale, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    systems = [[rng.randint(*TOKEN_RANGE) for _ in range(scale.system_len)] for _ in range(scale.systems)]
    prompts = [s + [rng.randint(*TOKEN_RANGE) for _ in range(scale.question_len)]
               for s in systems for _ in range(scale.per_system)]
    rng.shuffle(prompts)
    return prompts


def measure_throughput(server: AstraiServer, scale: Scale) -> dict:
    prompts = throughput_prompts(scale)
    asyncio.run(_drive(server.base_url, prompts[:2], 4, 2))  # warm up
    results, seconds = asyncio.run(_drive(server.base_url, prompts, scale.output_len, scale.throughput_concurrency))
    tokens = sum(r["completion_tokens"] for r in results)
    per_replica: dict[str, int] = {}
    for r in results:
        per_replica[r["replica"] or "single"] = per_replica.get(r["replica"] or "single", 0) + 1
    return {"requests": len(results), "output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1), "requests_per_replica": per_replica}


def measure_prefix(server: AstraiServer, scale: Scale) -> dict:
    queries0 = scraped(server.base_url, "astrai:prefix_cache_queries_total")
    hits0 = scraped(server.base_url, "astrai:prefix_cache_hits_total")
    results, seconds = asyncio.run(_drive(server.base_url, prefix_prompts(scale), scale.prefix_output_len,
                                          scale.prefix_concurrency))
    queries = scraped(server.base_url, "astrai:prefix_cache_queries_total") - queries0
    hits = scraped(server.base_url, "astrai:prefix_cache_hits_total") - hits0
    prompt_tokens = sum(r["prompt_tokens"] for r in results)
    cached = sum(r["cached_tokens"] for r in results)
    return {"requests": len(results), "seconds": round(seconds, 2), "prompt_tokens": prompt_tokens,
            "cached_tokens": cached, "hit_rate": round(hits / queries, 3) if queries else None,
            "cached_fraction_of_prompts": round(cached / prompt_tokens, 3) if prompt_tokens else None}


@contextmanager
def one_thread() -> Iterator[None]:
    """The server started inside runs torch on one thread, as each replica of two does on 2 cores."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run(scale: Scale) -> dict:
    out: dict = {"scale": asdict(scale), "load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
    with AstraiServer(MODEL, server_args(1, "prefix"), startup_timeout_s=600) as single:
        out["single_prefix"] = measure_prefix(single, scale)
        out["single_throughput"] = measure_throughput(single, scale)
    with one_thread(), AstraiServer(MODEL, server_args(1, "prefix"), startup_timeout_s=600) as single:
        out["single_one_thread_throughput"] = measure_throughput(single, scale)
    with AstraiServer(MODEL, server_args(2, "prefix"), startup_timeout_s=600) as two:
        wait_replicas(two, 2)
        out["two_prefix_aware"] = measure_prefix(two, scale)
        out["two_throughput"] = measure_throughput(two, scale)
    with AstraiServer(MODEL, server_args(2, "round-robin"), startup_timeout_s=600) as rr:
        wait_replicas(rr, 2)
        out["two_round_robin"] = measure_prefix(rr, scale)
    two = out["two_throughput"]["output_tokens_per_s"]
    out["throughput_ratio_two_vs_one"] = round(two / out["single_throughput"]["output_tokens_per_s"], 2)
    out["throughput_ratio_two_vs_one_thread"] = round(two / out["single_one_thread_throughput"]["output_tokens_per_s"],
                                                      2)
    out["load_average_end"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args(argv)
    result = run(QUICK if args.quick else Scale())
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{stamp}-replicas{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"throughput, output tok/s: 1 process {result['single_throughput']['output_tokens_per_s']} "
          f"(1 thread: {result['single_one_thread_throughput']['output_tokens_per_s']}), "
          f"2 replicas {result['two_throughput']['output_tokens_per_s']} "
          f"(x{result['throughput_ratio_two_vs_one']}; x{result['throughput_ratio_two_vs_one_thread']} "
          "against the one-thread process)")
    print(f"prefix-cache hit rate: 1 process {result['single_prefix']['hit_rate']}, 2 replicas prefix-aware "
          f"{result['two_prefix_aware']['hit_rate']}, round-robin {result['two_round_robin']['hit_rate']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
