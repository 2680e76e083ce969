"""Bounded loopback load: 64 concurrent streaming clients, a quarter of them hanging up mid-stream.

Every stream that is not cut ends with [DONE] and carries exactly the text of the same greedy
request made without streaming; the cut ones are aborted in the engine; afterwards nothing runs
and every KV page is free or cached.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from .conftest import API_KEY, MODEL, wait_idle

N_CLIENTS = 64
MAX_TOKENS = 12
CUT_MAX_TOKENS = 64  # long enough that only an abort can end them early


def body(i: int, *, stream: bool, cut: bool = False) -> dict:
    request = {"model": MODEL, "messages": [{"role": "user", "content": f"Tell me a fact about the number {i}."}],
               "max_tokens": CUT_MAX_TOKENS if cut else MAX_TOKENS, "temperature": 0, "stream": stream}
    if cut:
        request["ignore_eos"] = True
    return request


async def run_stream(client: httpx.AsyncClient, i: int, cut: bool) -> dict:
    result = {"id": None, "text": "", "done": False, "finish": None, "cut": cut}
    async with client.stream("POST", "/chat/completions", json=body(i, stream=True, cut=cut)) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line[len("data: "):]
            if data == "[DONE]":
                result["done"] = True
                break
            chunk = json.loads(data)
            assert "error" not in chunk, chunk
            result["id"] = chunk["id"]
            choice = chunk["choices"][0]
            result["text"] += choice["delta"].get("content") or ""
            result["finish"] = choice["finish_reason"] or result["finish"]
            if cut and result["text"]:
                return result  # leaving the block closes the connection mid-stream
    return result


async def run_load(base_url: str) -> tuple[list[dict], list[str]]:
    limits = httpx.Limits(max_connections=N_CLIENTS + 8, max_keepalive_connections=N_CLIENTS + 8)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                                 limits=limits) as client:
        streams = await asyncio.gather(*(run_stream(client, i, cut=i % 4 == 0) for i in range(N_CLIENTS)))
        kept = [i for i in range(N_CLIENTS) if i % 4 != 0]
        replies = await asyncio.gather(*(client.post("/chat/completions", json=body(i, stream=False)) for i in kept))
        for reply in replies:
            assert reply.status_code == 200, reply.text
        return streams, [r.json()["choices"][0]["message"]["content"] for r in replies]


def metric(text: str, name: str) -> float:
    labels = "" if "{" in name else r"\{[^}]*\}"
    match = re.search(rf"^{re.escape(name)}{labels} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_64_streams_with_a_quarter_disconnecting(server, engine, trace_log):
    streams, references = asyncio.run(run_load(server.v1))
    stats = wait_idle(engine)

    cut = [s for s in streams if s["cut"]]
    kept = [s for s in streams if not s["cut"]]
    assert len(cut) == 16 and len(kept) == 48
    for stream, reference in zip(kept, references, strict=True):
        assert stream["done"], stream
        assert stream["finish"] in ("stop", "length")
        assert stream["text"] == reference
    for stream in cut:
        assert not stream["done"]
        assert trace_log.finish_reason(stream["id"]) == "abort", stream

    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["num_free_pages"] + stats["num_cached_pages"] == stats["num_pages"]
    assert server.app.state.service.admission.in_flight == 0
    text = httpx.get(server.base_url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    assert metric(text, "astrai:num_requests_running") == 0
    assert metric(text, "astrai:num_requests_waiting") == 0
    assert metric(text, "astrai:generation_tokens_total") > 0
    aborted = f'astrai:request_success_total{{finished_reason="abort",model_name="{MODEL}"}}'
    assert metric(text, aborted) >= 16
