"""Shared engines for the scheduler tests: the bundled SmolLM2 model is loaded once (float32)."""

from __future__ import annotations

import pytest
import torch
import transformers
from astrai.model import bundled_gguf_path, load_model
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
    """The float32 reference: the GGUF dequantized, float32 KV (what transformers computes)."""
    eng = Engine.from_pretrained(MODEL, dtype="float32", quantization="none", num_pages=2048, max_num_seqs=32)
    yield eng
    settle(eng)
    eng.shutdown()


@pytest.fixture(scope="session")
def low_bit_engine():
    """The default path: Q4_1/Q8_0 weights packed, native kernels, float16 KV."""
    eng = Engine.from_pretrained(MODEL, num_pages=2048, max_num_seqs=32)
    assert eng.describe().forward == "native", "the native kernels must build on this machine"
    yield eng
    settle(eng)
    eng.shutdown()


@pytest.fixture(scope="session")
def torch_engine(engine):
    """The pure-torch twin of `engine`: the same float32 weights run by the Python layers."""
    model, tokenizer = load_model(MODEL, dtype="float32", quantization="none")
    eng = Engine(model, tokenizer, num_pages=2048, max_num_seqs=32)
    assert eng.describe().forward == "torch"
    yield eng
    settle(eng)
    eng.shutdown()


ENGINE_FIXTURES = ("engine", "low_bit_engine", "torch_engine")


@pytest.fixture(autouse=True)
def _pool_invariant_after_each_test(request):
    """Every workload ends with the shared engines idle and their KV pools consistent."""
    yield
    for name in ENGINE_FIXTURES:
        if name in request.fixturenames:
            settle(request.getfixturevalue(name))


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
