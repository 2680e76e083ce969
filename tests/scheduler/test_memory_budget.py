"""The KV budget is computed in one place (a single engine and each replica's share), and
llguidance's mask pool follows the machine (or ASTRAI_GRAMMAR_THREADS), not a constant."""

from __future__ import annotations

import os

import pytest
import torch
from astrai.model import ModelConfig
from astrai.scheduler import kv_budget_bytes, pages_in_budget
from astrai.scheduler.grammar import THREADS_ENV, grammar_threads
from astrai.scheduler.memory import CPU_KV_CAP_BYTES, CPU_KV_FRACTION

GIB = 1 << 30


@pytest.mark.parametrize("available", [1 * GIB, 4 * GIB, 64 * GIB])
@pytest.mark.parametrize("share", [1, 2, 3])
def test_cpu_budget_is_a_capped_fraction_split_evenly(available, share):
    whole = min(available * CPU_KV_FRACTION, CPU_KV_CAP_BYTES)
    assert kv_budget_bytes("cpu", available=available) == int(whole)
    assert kv_budget_bytes("cpu", share=share, available=available) == int(whole // share)


def test_pages_in_budget_counts_whole_pages_of_the_dtype():
    config = ModelConfig(name="tiny", vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=128)
    per_page = config.kv_bytes_per_token(torch.float16) * 16
    assert pages_in_budget(config, torch.float16, 16, 10 * per_page + per_page - 1) == 10
    assert pages_in_budget(config, "float32", 16, 10 * per_page) == 5  # twice the bytes per element
    assert pages_in_budget(config, torch.float16, 16, 0) == 1  # never an empty pool


def test_grammar_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert grammar_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, "3")
    assert grammar_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        grammar_threads()
