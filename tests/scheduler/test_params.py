"""SamplingParams validation: bad input raises ValueError naming the field."""

import pytest
from astrai.scheduler import SamplingParams


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("max_tokens", 2.5),
        ("min_tokens", -1),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("temperature", "hot"),
        ("top_k", -2),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", -0.5),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("seed", "abc"),
        ("logprobs", -1),
        ("stop", 5),
        ("stop", ["ok", ""]),
        ("stop_token_ids", [1, -2]),
        ("stop_token_ids", "12"),
        ("ignore_eos", "yes"),
    ],
)
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_min_tokens_above_max_tokens_is_rejected():
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(max_tokens=4, min_tokens=5)


def test_defaults_and_normalisation():
    p = SamplingParams(stop="###", stop_token_ids=(7, 8))
    assert p.stop_strings == ["###"]
    assert p.stop_token_ids == [7, 8]
    assert not p.greedy and SamplingParams(temperature=0).greedy
    assert SamplingParams(frequency_penalty=0.5).needs_penalties is True
