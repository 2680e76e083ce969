"""Shared engines for the scheduler tests: the bundled SmolLM2 model is loaded once (float32)."""

from __future__ import annotations

import pytest
import torch
import transformers
from astrai.model import bundled_gguf_path
from astrai.scheduler import Engine

MODEL = "smollm2-135m-instruct"

TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press. Books became cheaper, "
    "literacy spread across Europe, and ideas travelled faster than ever before. Scientists shared "
    "their results, reformers spread pamphlets, and newspapers appeared in the following centuries. "
    "Today the same story is told about the internet, which changed how people read and write again."
)


def mixed_prompts(tokenizer, n: int = 16) -> list[list[int]]:
    """n real-text prompts of clearly different lengths (token ids)."""
    ids = tokenizer.encode(TEXT)
    lengths = [3 + (i * 7) % (len(ids) - 3) for i in range(n)]
    return [ids[i % 5 : i % 5 + length] for i, length in enumerate(lengths)]


def settle(engine: Engine) -> None:
    """Wait until the engine is idle, then check the KV pool's invariant."""
    assert engine.wait_idle(timeout=60), "engine did not go idle"
    engine.kv.check_invariants()


@pytest.fixture(scope="session")
def engine():
    eng = Engine.from_pretrained(MODEL, dtype="float32", num_pages=2048, max_num_seqs=32)
    yield eng
    settle(eng)
    eng.shutdown()


@pytest.fixture(autouse=True)
def _pool_invariant_after_each_test(request):
    """Every workload ends with the shared engine idle and its KV pool consistent."""
    yield
    if "engine" in request.fixturenames:
        settle(request.getfixturevalue("engine"))


@pytest.fixture(scope="session")
def make_engine(engine):
    """Build more engines over the already-loaded model (different pools and policies)."""
    made: list[Engine] = []

    def make(**kwargs) -> Engine:
        eng = Engine(engine.model, engine.tokenizer, **kwargs)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        settle(eng)
        eng.shutdown()


@pytest.fixture(scope="session")
def prompts(engine):
    return mixed_prompts(engine.tokenizer)


@pytest.fixture(scope="session")
def greedy_alone(engine, prompts):
    """Reference: each prompt generated greedily on its own (8 tokens, EOS ignored)."""
    from astrai.scheduler import SamplingParams

    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    refs = [engine.generate([p], params)[0].token_ids for p in prompts]
    settle(engine)
    return refs


@pytest.fixture(scope="session")
def hf_model():
    """transformers reading the same GGUF (float32): the outside reference for tokens and logprobs."""
    path = bundled_gguf_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
