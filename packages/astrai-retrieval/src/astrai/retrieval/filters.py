"""Metadata filters in OpenAI's shape (vector store search `filters`, file attributes).

    comparison: {"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": str, "value": v}
    compound:   {"type": "and"|"or", "filters": [comparison | compound, ...]}   (non-empty)

Values are strings, numbers or booleans (a list of them for "in" / "nin"). Semantics, chosen to
be total (every filter answers every passage):
- eq / ne / in / nin compare by type and value (True is not 1; 1 == 1.0);
- gt / gte / lt / lte order numbers with numbers and strings with strings (code point order);
  any other pairing, booleans included, does not match;
- a missing key matches only "ne" and "nin".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import FilterError

MetadataValue = str | int | float | bool
Metadata = Mapping[str, MetadataValue]

COMPARISONS: tuple[str, ...] = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS: tuple[str, ...] = ("and", "or")
MAX_DEPTH = 16


def _same(a: MetadataValue, b: MetadataValue) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def _ordered(a: MetadataValue, b: MetadataValue) -> bool:
    """Whether a and b can be ordered against each other."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return isinstance(a, str) == isinstance(b, str)


@dataclass(frozen=True)
class ComparisonFilter:
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: str
    value: MetadataValue | tuple[MetadataValue, ...]

    def matches(self, metadata: Metadata) -> bool:
        if self.key not in metadata:
            return self.type in ("ne", "nin")
        have = metadata[self.key]
        if self.type == "eq":
            return _same(have, self.value)  # type: ignore[arg-type]
        if self.type == "ne":
            return not _same(have, self.value)  # type: ignore[arg-type]
        if self.type in ("in", "nin"):
            found = any(_same(have, v) for v in self.value)  # type: ignore[union-attr]
            return found if self.type == "in" else not found
        want = self.value
        if not _ordered(have, want):  # type: ignore[arg-type]
            return False
        if self.type == "gt":
            return have > want  # type: ignore[operator]
        if self.type == "gte":
            return have >= want  # type: ignore[operator]
        if self.type == "lt":
            return have < want  # type: ignore[operator]
        return have <= want  # type: ignore[operator]

    def to_dict(self) -> dict:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"type": self.type, "key": self.key, "value": value}


@dataclass(frozen=True)
class CompoundFilter:
    type: Literal["and", "or"]
    filters: tuple[Filter, ...]

    def matches(self, metadata: Metadata) -> bool:
        if self.type == "and":
            return all(f.matches(metadata) for f in self.filters)
        return any(f.matches(metadata) for f in self.filters)

    def to_dict(self) -> dict:
        return {"type": self.type, "filters": [f.to_dict() for f in self.filters]}


Filter = ComparisonFilter | CompoundFilter


def _check_value(value: object, where: str) -> MetadataValue:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"{where} must be a finite number, got {value!r}", where)
        return value
    raise FilterError(f"{where} must be a string, number or boolean, got {type(value).__name__}", where)


def parse_filter(data: Mapping | Filter | None, param: str = "filters") -> Filter | None:
    """OpenAI's JSON filter -> a `Filter` (None passes through); `FilterError.param` points at
    the offending part, e.g. "filters.filters[1].value"."""
    if data is None or isinstance(data, (ComparisonFilter, CompoundFilter)):
        return data
    return _parse(data, param, 0)


def _parse(data: object, where: str, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise FilterError(f"filters nest deeper than {MAX_DEPTH} levels", where)
    if not isinstance(data, Mapping):
        raise FilterError(f"{where} must be an object, got {type(data).__name__}", where)
    kind = data.get("type")
    if kind in COMPOUNDS:
        unknown = set(data) - {"type", "filters"}
        if unknown:
            raise FilterError(f"{where} has unknown fields {sorted(unknown)}", where)
        items = data.get("filters")
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
            raise FilterError(f"{where}.filters must be a non-empty array", f"{where}.filters")
        return CompoundFilter(kind, tuple(_parse(item, f"{where}.filters[{i}]", depth + 1)
                                          for i, item in enumerate(items)))
    if kind not in COMPARISONS:
        raise FilterError(f"{where}.type must be one of {', '.join(COMPARISONS + COMPOUNDS)}, got {kind!r}",
                          f"{where}.type")
    unknown = set(data) - {"type", "key", "value"}
    if unknown:
        raise FilterError(f"{where} has unknown fields {sorted(unknown)}", where)
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise FilterError(f"{where}.key must be a non-empty string", f"{where}.key")
    if "value" not in data:
        raise FilterError(f"{where}.value is required", f"{where}.value")
    value = data["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
            raise FilterError(f"{where}.value must be a non-empty array for {kind!r}", f"{where}.value")
        return ComparisonFilter(kind, key, tuple(_check_value(v, f"{where}.value[{i}]") for i, v in enumerate(value)))
    return ComparisonFilter(kind, key, _check_value(value, f"{where}.value"))


def check_metadata(metadata: Mapping, param: str = "metadata") -> dict[str, MetadataValue]:
    """A passage's metadata, checked: string keys, string / number / boolean values."""
    if not isinstance(metadata, Mapping):
        raise FilterError(f"{param} must be an object", param)
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise FilterError(f"{param} keys must be strings, got {key!r}", param)
        out[key] = _check_value(value, f"{param}.{key}")
    return out
