"""Choosing the kernels' instruction-set variant: the probe, ASTRAI_KERNELS_ISA, and every variant
this CPU runs giving the same answers (their arithmetic is the same, so bit for bit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from astrai.model.kernels import isa
from astrai.model.kernels.build import NativeUnavailable, check_machine

from .test_quantized_smollm2 import PROMPTS


def can_build() -> bool:
    try:
        check_machine()
    except NativeUnavailable:
        return False
    return True


def test_the_probe_reports_every_variant_with_a_reason():
    found = isa.probe()
    assert [s.variant for s in found] == list(isa.VARIANTS)
    assert all(s.reason for s in found)
    if can_build():
        assert found[0].supported, found  # every machine these kernels build on has AVX2
        # a variant implies the ones below it (AMX needs AVX-512)
        flags = [s.supported for s in found]
        assert flags == sorted(flags, reverse=True), found


def test_the_automatic_choice_is_the_best_verified_variant(monkeypatch):
    monkeypatch.delenv(isa.ENV_VARIABLE, raising=False)
    runnable = [v for v in isa.supported_variants() if v in isa.VERIFIED]
    assert isa.choose_variant() == (runnable[-1] if runnable else None)


def test_forcing_names_the_valid_and_the_runnable_variants(monkeypatch):
    monkeypatch.setenv(isa.ENV_VARIABLE, "sse9")
    with pytest.raises(isa.IsaError, match="not a kernel variant; valid: avx2, avx512, amx"):
        isa.choose_variant()
    unsupported = [s for s in isa.probe() if not s.supported]
    for support in unsupported:
        monkeypatch.setenv(isa.ENV_VARIABLE, support.variant.upper())
        with pytest.raises(isa.IsaError, match=f"cannot run it .*it runs: {', '.join(isa.supported_variants()) or 'none'}"):
            isa.choose_variant()
    for variant in isa.supported_variants():  # case and spaces do not matter; unverified ones may be forced
        monkeypatch.setenv(isa.ENV_VARIABLE, f" {variant.upper()} ")
        assert isa.choose_variant() == variant


GREEDY = textwrap.dedent("""
    import json, logging, sys
    from astrai.scheduler import Engine, SamplingParams
    logging.basicConfig(level=logging.INFO)
    prompts = json.loads(sys.argv[1])
    with Engine.from_pretrained("smollm2-135m-instruct", num_pages=256, max_num_seqs=8) as engine:
        info = engine.describe()
        params = SamplingParams(max_tokens=16, temperature=0.0, logprobs=1, ignore_eos=True)
        outs = [engine.chat([{"role": "user", "content": p}], params) for p in prompts]
    print(json.dumps({"kernels": info.kernels, "forward": info.forward,
                      "tokens": [o.token_ids for o in outs], "logprobs": [o.logprobs for o in outs]}))
""")


def test_every_runnable_variant_gives_the_same_greedy_chat_output():
    if not can_build():
        pytest.skip("no native kernels on this machine")
    variants = isa.supported_variants()
    results = {}
    for variant in variants:
        env = dict(os.environ, ASTRAI_KERNELS_ISA=variant)
        env.pop("ASTRAI_KERNELS", None)
        done = subprocess.run([sys.executable, "-c", GREEDY, json.dumps(PROMPTS)], env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"variant {variant}" in done.stderr  # the start-up log line names the variant
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        assert (results[variant]["kernels"], results[variant]["forward"]) == (variant, "native")
    print(f"\nvariants run here: {', '.join(variants)}")
    first = results[variants[0]]
    for variant in variants[1:]:
        assert results[variant]["tokens"] == first["tokens"], variant
        assert results[variant]["logprobs"] == first["logprobs"], variant  # the same arithmetic: bitwise
