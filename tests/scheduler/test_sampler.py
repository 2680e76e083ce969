"""The batched sampler on synthetic logits: each control does what it says, row by row."""

import random
from dataclasses import dataclass, field

import pytest
import torch
from astrai.model import sample_temperature
from astrai.model.kernels import kernels
from astrai.scheduler import SamplingParams
from astrai.scheduler import sampler as sampler_module
from astrai.scheduler.random_stream import position_uniform
from astrai.scheduler.sampler import Sampler, greedy_tokens

VOCAB = 50


@pytest.fixture(autouse=True, params=["native", "torch"])
def sampling_path(request, monkeypatch):
    """Every test on both paths for rows with temperature alone: the native kernel (where the
    kernels run) and the torch ops every other row and every machine without kernels uses."""
    if request.param == "native":
        if kernels() is None:
            pytest.skip("the native kernels do not run here")
    else:
        monkeypatch.setattr(sampler_module, "sample_temperature", lambda *args: None)
    return request.param


@dataclass
class Row:
    params: SamplingParams
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    banned: list[int] = field(default_factory=list)
    constraint: None = None  # structured outputs: tests/scheduler/test_structured_outputs.py
    grammar_bitmask: None = None
    tokens_left: int = 16
    sample_seed: int = 0
    index: int = 0

    def __post_init__(self):
        self.sample_seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)

    @property
    def random_key(self):
        return self.sample_seed, self.index, len(self.output_token_ids)

    def banned_token_ids(self):
        return self.banned


def logits_for(n, seed=0):
    return torch.randn(n, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax():
    logits = logits_for(4)
    res = Sampler().sample(logits, [Row(SamplingParams(temperature=0)) for _ in range(4)])
    assert res.token_ids == logits.argmax(-1).tolist()


def test_top_k_one_is_argmax_even_at_high_temperature():
    logits = logits_for(3)
    rows = [Row(SamplingParams(temperature=5.0, top_k=1)) for _ in range(3)]
    for _ in range(5):
        assert Sampler().sample(logits, rows).token_ids == logits.argmax(-1).tolist()


def test_top_k_restricts_support():
    logits = logits_for(1)
    allowed = set(logits[0].topk(3).indices.tolist())
    rows = [Row(SamplingParams(temperature=3.0, top_k=3, seed=i)) for i in range(64)]
    got = Sampler().sample(logits.expand(64, VOCAB).contiguous(), rows).token_ids
    assert set(got) <= allowed and len(set(got)) > 1


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05] + [0.0] * (VOCAB - 4)) + 1e-12
    logits = probs.log().unsqueeze(0).expand(200, VOCAB).contiguous()
    rows = [Row(SamplingParams(temperature=1.0, top_p=0.7, seed=i)) for i in range(200)]
    got = Sampler().sample(logits, rows).token_ids
    assert set(got) == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there


def test_min_p_drops_unlikely_tokens():
    probs = torch.tensor([0.6, 0.3, 0.05, 0.05] + [0.0] * (VOCAB - 4)) + 1e-12
    logits = probs.log().unsqueeze(0).expand(200, VOCAB).contiguous()
    rows = [Row(SamplingParams(temperature=1.0, min_p=0.2, seed=i)) for i in range(200)]
    got = Sampler().sample(logits, rows).token_ids
    assert set(got) == {0, 1}


def test_seeded_row_is_independent_of_its_batch():
    logits = logits_for(6, seed=3)
    target = logits[2:3]
    row = Row(SamplingParams(temperature=1.0, seed=42))
    alone_seq, busy_seq = [], []
    solo = Row(SamplingParams(temperature=1.0, seed=42))
    for _ in range(20):
        alone_seq.append(Sampler().sample(target, [solo]).token_ids[0])
        solo.output_token_ids.append(alone_seq[-1])
        others = [Row(SamplingParams(temperature=0.7, top_p=0.9)) for _ in range(5)]
        batch = others[:2] + [row] + others[2:]
        busy_seq.append(Sampler().sample(logits, batch).token_ids[2])
        row.output_token_ids.append(busy_seq[-1])
    assert alone_seq == busy_seq
    assert len(set(alone_seq)) > 1  # it really samples


def test_the_random_number_is_keyed_by_seed_choice_and_position_only():
    probs = torch.full((1, VOCAB), 1.0 / VOCAB)
    logits = probs.log()
    first = Row(SamplingParams(temperature=1.0, seed=7), output_token_ids=[1, 2, 3])
    same = Row(SamplingParams(temperature=1.0, seed=7), output_token_ids=[9, 9, 9])  # other history, same position
    assert Sampler().sample(logits.clone(), [first]).token_ids == Sampler().sample(logits.clone(), [same]).token_ids
    draws = {}
    for key in [(7, 0, p) for p in range(40)] + [(7, i, 3) for i in range(1, 40)] + [(s, 0, 3) for s in range(8, 48)]:
        row = Row(SamplingParams(temperature=1.0, seed=key[0]), output_token_ids=[0] * key[2], index=key[1])
        draws[key] = Sampler().sample(logits.clone(), [row]).token_ids[0]
    # a uniform distribution over 50 tokens: each key family spreads over many tokens
    for family in (lambda k: k[0] == 7 and k[1] == 0, lambda k: k[2] == 3 and k[0] == 7, lambda k: k[0] >= 8):
        assert len({v for k, v in draws.items() if family(k)}) > 15


def test_sampling_follows_the_distribution():
    probs = torch.zeros(VOCAB)
    probs[:4] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = (probs + 1e-12).log().unsqueeze(0).expand(4000, VOCAB).contiguous()
    rows = [Row(SamplingParams(temperature=1.0)) for _ in range(4000)]
    got = torch.tensor(Sampler().sample(logits, rows).token_ids)
    freq = torch.bincount(got, minlength=4)[:4].float() / 4000
    assert torch.allclose(freq, probs[:4], atol=0.03)


def test_banned_tokens_are_never_sampled():
    logits = logits_for(2)
    best = logits.argmax(-1).tolist()
    rows = [Row(SamplingParams(temperature=0), banned=[best[0]]), Row(SamplingParams(temperature=0))]
    got = Sampler().sample(logits, rows).token_ids
    assert got[0] != best[0] and got[1] == best[1]


def test_penalties_follow_vllm_semantics():
    logits = torch.zeros(1, VOCAB)
    logits[0, 1] = 2.0
    logits[0, 2] = -2.0
    logits[0, 3] = 1.9
    # repetition penalty divides positive and multiplies negative logits of seen tokens
    row = Row(SamplingParams(temperature=0, repetition_penalty=2.0), prompt_token_ids=[1])
    assert Sampler().sample(logits.clone(), [row]).token_ids == [3]
    # frequency penalty grows with the count; presence only with whether it appeared
    row = Row(SamplingParams(temperature=0, frequency_penalty=0.05), output_token_ids=[1, 1, 1])
    assert Sampler().sample(logits.clone(), [row]).token_ids == [3]
    row = Row(SamplingParams(temperature=0, presence_penalty=0.05), output_token_ids=[1, 1, 1])
    assert Sampler().sample(logits.clone(), [row]).token_ids == [1]
    row = Row(SamplingParams(temperature=0, presence_penalty=0.2), output_token_ids=[1])
    assert Sampler().sample(logits.clone(), [row]).token_ids == [3]


def test_logprobs_are_model_log_softmax():
    logits = logits_for(2)
    rows = [Row(SamplingParams(temperature=0, logprobs=3)), Row(SamplingParams(temperature=0))]
    res = Sampler().sample(logits, rows)
    lp = torch.log_softmax(logits[0], -1)
    entry = res.logprobs[0]
    assert entry["token_id"] == res.token_ids[0]
    assert entry["logprob"] == pytest.approx(lp[res.token_ids[0]].item(), abs=1e-5)
    top_ids = [t for t, _ in entry["top"]]
    assert top_ids == lp.topk(3).indices.tolist()
    assert res.logprobs[1] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_tokens_match_torch_argmax_on_ties_nan_and_strided_rows(dtype):
    logits = torch.randn(6, 4099, generator=torch.Generator().manual_seed(3)).to(dtype)
    logits[1, 7] = float("nan")  # NaN counts as the largest
    logits[2, 100] = logits[2, 3000] = logits[2].max() + 1  # a tie: the first wins
    logits[3] = 0.0  # all equal
    for view in (logits, logits[:, ::3], logits[::2]):
        assert greedy_tokens(view) == view.argmax(dim=-1).tolist()
    assert greedy_tokens(logits)[1:4] == [7, 100, 0]


def test_rows_with_temperature_alone_take_the_native_kernel(sampling_path):
    if sampling_path != "native":
        pytest.skip("the native path only")
    logits = logits_for(8, seed=11)
    rows = [Row(SamplingParams(temperature=0.5 + 0.2 * i, seed=100 + i)) for i in range(8)]
    got = Sampler().sample(logits.clone(), rows).token_ids
    expected = sample_temperature(logits, torch.tensor([r.params.temperature for r in rows]),
                                  torch.tensor([position_uniform(*r.random_key) for r in rows], dtype=torch.float64))
    assert expected is not None and got == expected.tolist()
