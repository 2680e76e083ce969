"""Prometheus metrics (vLLM names, astrai: prefix) and the one-line-per-request log."""

from __future__ import annotations

import logging
import re

import httpx

from .conftest import MODEL, wait_idle

REQUIRED = ["astrai:num_requests_running", "astrai:num_requests_waiting", "astrai:kv_cache_usage_perc",
            "astrai:prompt_tokens_total", "astrai:generation_tokens_total",
            "astrai:time_to_first_token_seconds_count", "astrai:inter_token_latency_seconds_count",
            "astrai:e2e_request_latency_seconds_count", "astrai:prefix_cache_queries_total",
            "astrai:prefix_cache_hits_total", "astrai:num_preemptions_total"]


def scrape(http: httpx.Client) -> dict[str, float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        match = re.match(r"^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$", line)
        if match and 'le="' not in (match.group(2) or ""):
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
    return values


def test_metrics_follow_the_engine(http, engine):
    wait_idle(engine)
    before = scrape(http)
    for name in REQUIRED:
        assert name in before, name
    reply = http.post("/v1/completions", json={"model": MODEL, "prompt": "One two three", "max_tokens": 3,
                                                "temperature": 0, "ignore_eos": True})
    assert reply.status_code == 200
    stats = wait_idle(engine)
    after = scrape(http)
    assert after["astrai:prompt_tokens_total"] == stats["prompt_tokens_total"]
    assert after["astrai:generation_tokens_total"] == stats["generation_tokens_total"]
    assert after["astrai:generation_tokens_total"] - before["astrai:generation_tokens_total"] == 3
    assert after["astrai:time_to_first_token_seconds_count"] - before["astrai:time_to_first_token_seconds_count"] == 1
    assert after["astrai:e2e_request_latency_seconds_count"] - before["astrai:e2e_request_latency_seconds_count"] == 1
    assert after["astrai:inter_token_latency_seconds_count"] - before["astrai:inter_token_latency_seconds_count"] == 2
    assert after["astrai:num_requests_running"] == 0
    assert 0.0 <= after["astrai:kv_cache_usage_perc"] <= 1.0


def test_prefix_cache_hits_are_counted_and_reported(http, engine):
    prompt = "Repeat after me: " + "the quick brown fox jumps over the lazy dog " * 6
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0}
    http.post("/v1/completions", json=body)
    before = scrape(http)
    second = http.post("/v1/completions", json=body).json()
    after = scrape(http)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 16
    hits = after["astrai:prefix_cache_hits_total"] - before["astrai:prefix_cache_hits_total"]
    assert hits == second["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_one_log_line_per_request_without_prompt_text(http, caplog):
    caplog.set_level(logging.INFO, logger="astrai.server")
    secret = "zebra unicorn marmalade"
    reply = http.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 2,
                                                    "messages": [{"role": "user", "content": secret}]})
    request_id = reply.headers["x-request-id"]
    assert request_id == reply.json()["id"]
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1
    assert re.search(r"POST /v1/chat/completions 200 .*prompt_tokens=\d+ completion_tokens=2 .*ttft=", lines[0])
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_log_prompts_opt_in(tiny_server, caplog):
    caplog.set_level(logging.INFO, logger="astrai.server")
    reply = httpx.post(tiny_server.v1 + "/completions", timeout=60,
                       json={"model": MODEL, "prompt": "zebra unicorn", "max_tokens": 1})
    lines = [r.getMessage() for r in caplog.records if reply.headers["x-request-id"] in r.getMessage()]
    assert len(lines) == 1 and "zebra unicorn" in lines[0]
