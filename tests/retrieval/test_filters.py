"""OpenAI-shaped metadata filters: parsing errors point at the bad part; the semantics table."""

from __future__ import annotations

import pytest
from astrai.retrieval import FilterError, parse_filter

META = {"lang": "en", "year": 2021, "score": 0.5, "draft": False, "tag": "b"}


@pytest.mark.parametrize("spec,expected", [
    ({"type": "eq", "key": "lang", "value": "en"}, True),
    ({"type": "eq", "key": "year", "value": 2021.0}, True),
    ({"type": "eq", "key": "draft", "value": 0}, False),         # a boolean is not a number
    ({"type": "eq", "key": "year", "value": "2021"}, False),     # nor is a string
    ({"type": "ne", "key": "lang", "value": "de"}, True),
    ({"type": "ne", "key": "missing", "value": "x"}, True),
    ({"type": "eq", "key": "missing", "value": "x"}, False),
    ({"type": "gt", "key": "year", "value": 2020}, True),
    ({"type": "gte", "key": "score", "value": 0.5}, True),
    ({"type": "lt", "key": "score", "value": 0.5}, False),
    ({"type": "lte", "key": "tag", "value": "c"}, True),         # strings order with strings
    ({"type": "gt", "key": "tag", "value": 1}, False),           # but not with numbers
    ({"type": "gt", "key": "draft", "value": -1}, False),        # booleans never order
    ({"type": "in", "key": "tag", "value": ["a", "b"]}, True),
    ({"type": "nin", "key": "tag", "value": ["a", "b"]}, False),
    ({"type": "nin", "key": "missing", "value": ["a"]}, True),
    ({"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                 {"type": "lt", "key": "year", "value": 2000}]}, False),
    ({"type": "or", "filters": [{"type": "eq", "key": "lang", "value": "de"},
                                {"type": "and", "filters": [{"type": "eq", "key": "draft", "value": False}]}]}, True),
])
def test_semantics(spec, expected):
    parsed = parse_filter(spec)
    assert parsed.matches(META) is expected
    assert parse_filter(parsed.to_dict()) == parsed


@pytest.mark.parametrize("spec,param", [
    ("lang", "filters"),
    ({"type": "like", "key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "a"}, "filters.value"),
    ({"type": "eq", "key": "a", "value": {"x": 1}}, "filters.value"),
    ({"type": "eq", "key": "a", "value": float("inf")}, "filters.value"),
    ({"type": "in", "key": "a", "value": "abc"}, "filters.value"),
    ({"type": "in", "key": "a", "value": [1, None]}, "filters.value[1]"),
    ({"type": "and", "filters": []}, "filters.filters"),
    ({"type": "or", "filters": [{"type": "eq", "key": "a", "value": 1}, {"type": "gt", "key": ""}]},
     "filters.filters[1].key"),
    ({"type": "eq", "key": "a", "value": 1, "extra": 2}, "filters"),
])
def test_errors_point_at_the_bad_part(spec, param):
    with pytest.raises(FilterError) as info:
        parse_filter(spec)
    assert info.value.param == param


def test_depth_is_bounded():
    spec: dict = {"type": "eq", "key": "a", "value": 1}
    for _ in range(20):
        spec = {"type": "and", "filters": [spec]}
    with pytest.raises(FilterError, match="deeper"):
        parse_filter(spec)
    assert parse_filter(None) is None
