"""Speculative decoding over HTTP: the counters in /metrics, the per-request opt-out (extra_body
`speculation: false`), the tenant a request belongs to, and the server flags."""

from __future__ import annotations

import subprocess

import httpx
from astrai.server.cli import build_parser, engine_kwargs
from astrai.server.sampling import tenant_of
from starlette.requests import Request

from .conftest import MODEL, wait_idle
from .test_cli import astrai
from .test_metrics_and_logs import scrape

COPY = ("Copy this list exactly, one item per line: apples, pears, plums, cherries, lemons, limes, grapes, melons, "
        "peaches, apricots.")
SPECULATION = ["astrai:spec_decode_num_drafts_total", "astrai:spec_decode_num_draft_tokens_total",
               "astrai:spec_decode_num_accepted_tokens_total", "astrai:spec_decode_acceptance_rate",
               "astrai:spec_decode_suffix_tokens", "astrai:spec_decode_suffix_capacity_tokens"]


def chat(client, **extra):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": COPY}], max_tokens=60,
                                           temperature=0, extra_body=extra or None)
    return reply.choices[0].message.content


def test_metrics_count_drafts_and_the_opt_out_leaves_them_alone(client, http, engine):
    wait_idle(engine)
    before = scrape(http)
    for name in SPECULATION:
        assert name in before, name
    chat(client, speculation=False)
    stats = wait_idle(engine)
    opted_out = scrape(http)
    for name in SPECULATION[:3]:
        assert opted_out[name] == before[name], name
    chat(client)
    stats = wait_idle(engine)
    after = scrape(http)
    assert after["astrai:spec_decode_num_drafts_total"] == stats["spec_decode_num_drafts"] > 0
    assert after["astrai:spec_decode_num_draft_tokens_total"] == stats["spec_decode_num_draft_tokens"]
    accepted = after["astrai:spec_decode_num_accepted_tokens_total"]
    assert accepted == stats["spec_decode_num_accepted_tokens"] > before["astrai:spec_decode_num_accepted_tokens_total"]
    assert after["astrai:spec_decode_acceptance_rate"] == accepted / after["astrai:spec_decode_num_draft_tokens_total"]
    assert after.get("astrai:spec_decode_num_accepted_tokens_per_pos_total", 0.0) == accepted  # summed over positions
    assert 0 < after["astrai:spec_decode_suffix_tokens"] <= after["astrai:spec_decode_suffix_capacity_tokens"]


def test_a_bad_speculation_field_is_a_400_naming_it(http):
    reply = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                                     "speculation": "yes"})
    assert reply.status_code == 400
    assert "speculation" in reply.json()["error"]["message"]


def test_the_tenant_is_a_digest_of_the_api_key():
    def request(auth: str | None) -> Request:
        headers = [(b"authorization", auth.encode())] if auth is not None else []
        return Request({"type": "http", "headers": headers})

    alice, bob = tenant_of(request("Bearer key-a")), tenant_of(request("Bearer key-b"))
    assert alice and bob and alice != bob and alice == tenant_of(request("bearer  key-a"))
    assert "key-a" not in alice  # the key itself never travels to the engine
    assert tenant_of(request(None)) is None and tenant_of(request("Basic abc")) is None


def test_speculation_flags_reach_the_engine_and_reject_unknown_methods():
    parse = build_parser().parse_args
    assert not {k for k in engine_kwargs(parse(["serve"])) if k.startswith("speculation")}  # the engine's defaults
    kwargs = engine_kwargs(parse(["serve", "--speculation", "ngram", "--speculation-max-tokens", "4",
                                  "--speculation-suffix-tokens", "0", "--speculation-shared-suffix",
                                  "--speculation-row-cost", "0.25"]))
    assert kwargs["speculation"] == "ngram" and kwargs["speculation_max_tokens"] == 4
    assert kwargs["speculation_row_cost"] == 0.25
    assert kwargs["speculation_suffix_tokens"] == 0 and kwargs["speculation_shared_suffix"] is True
    result = subprocess.run(astrai("serve", "--speculation", "eagle"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--speculation" in result.stderr


def test_a_server_over_an_engine_with_speculation_off_drafts_nothing(engine):
    off = engine.with_settings(speculation="off")
    try:
        from astrai.server import ServerConfig, create_app

        from .conftest import serve

        with serve(create_app(ServerConfig(model=MODEL), engine=off)) as running:
            body = {"model": MODEL, "messages": [{"role": "user", "content": COPY}], "max_tokens": 40,
                    "temperature": 0}
            text = httpx.post(running.v1 + "/chat/completions", json=body, timeout=120).json()
            assert text["choices"][0]["message"]["content"]
            assert off.stats()["spec_decode_num_drafts"] == 0 and off.describe().speculation == "off"
    finally:
        off.shutdown()
