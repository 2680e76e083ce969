"""Shared engines for the scheduler tests: the bundled SmolLM2 model is loaded once (float32).

`exact_pair` runs the default low-bit model behind `OneRowAtATime` (every row its own forward),
with speculation on and off: the reference for speculative decoding that needs no
batch-invariant kernels."""

from __future__ import annotations

import pytest
import torch
import transformers
from astrai.model import ForwardBatch, bundled_gguf_path, load_model
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


class OneRowAtATime:
    """A ForwardModel computing each row on its own: prefill chunks one sequence per call, decode
    and verification tokens one token per call (in position order), so a row's logits never
    depend on what else is in the step or how many draft tokens are verified with it."""

    def __init__(self, model) -> None:
        self.model = model
        self.config = model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def low_bit(self) -> bool:
        return self.model.low_bit

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def kernels(self) -> str:
        return self.model.kernels

    def weight_format(self) -> str:
        return self.model.weight_format()

    def forward(self, batch: ForwardBatch, kv_caches, page_size: int) -> torch.Tensor:
        ids, pos = batch.token_ids.tolist(), batch.positions.tolist()
        slots, qsl = batch.slot_mapping.tolist(), batch.query_start_loc.tolist()
        ctx, tables = batch.context_lens.tolist(), batch.block_tables.tolist()
        wanted = batch.logits_indices.tolist()
        rows: dict[int, torch.Tensor] = {}

        def run(lo: int, hi: int, context: int, b: int) -> None:
            want = [r for r in wanted if lo <= r < hi]
            sub = ForwardBatch.from_flat(ids[lo:hi], pos[lo:hi], slots[lo:hi], [list(tables[b])], [context],
                                         [0, hi - lo], [r - lo for r in want], device=self.device)
            for r, row in zip(want, self.model.forward(sub, kv_caches, page_size), strict=True):
                rows[r] = row

        for b in range(len(qsl) - 1):
            lo, hi = qsl[b], qsl[b + 1]
            every_row = all(r in wanted for r in range(lo, hi))
            if hi - lo > 1 and not every_row:  # a prefill chunk: the sequence alone
                run(lo, hi, ctx[b], b)
            else:  # a decode token, or a verification chunk: token by token
                for i in range(lo, hi):
                    run(i, i + 1, ctx[b] - (hi - 1 - i), b)
        if not wanted:
            return torch.empty(0, self.config.vocab_size, device=self.device)
        return torch.stack([rows[r] for r in wanted])


@pytest.fixture(scope="session")
def exact_pair(low_bit_engine):
    """Speculation on and off over the one-row-at-a-time model (no prefix cache, so every prompt
    is prefilled alone in one chunk in both engines)."""
    model = OneRowAtATime(low_bit_engine.model)
    # Rows here cost a whole forward each, so the learnt cost would stop drafting: pin the ratio
    # a real step has (a draft row ~ 0.3 of a decode step's fixed cost).
    kwargs = dict(enable_prefix_cache=False, max_num_batched_tokens=8192, num_pages=2048, max_num_seqs=16,
                  kv_cache_dtype=low_bit_engine.kv.kv.dtype, speculation_max_tokens=8, speculation_row_cost=0.3)
    on = Engine(model, low_bit_engine.tokenizer, speculation="suffix", **kwargs)
    off = Engine(model, low_bit_engine.tokenizer, speculation="off", **kwargs)
    yield on, off
    for eng in (on, off):
        settle(eng)
        eng.shutdown()
