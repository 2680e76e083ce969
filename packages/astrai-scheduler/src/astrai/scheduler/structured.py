"""Structured outputs: what a request's output must match, with vLLM's field names.

`StructuredOutputsParams` names the constraint (a JSON schema, any JSON object, a regex, a
list of choices, or a Lark/GBNF grammar); `astrai.scheduler.grammar` compiles it with
llguidance into a per-request `TokenConstraint` whose token masks the batched sampler applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import FieldError

KINDS = ("json", "json_object", "regex", "choice", "grammar")


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Exactly one of `json` (a JSON schema, dict or string), `json_object` (any JSON object),
    `regex`, `choice` (the output is one of these strings) or `grammar` (Lark or GBNF text).

    `whitespace_pattern` (a regex) replaces the default JSON whitespace; `None` allows none
    between tokens, so a small model cannot stall in an endless run of spaces.
    """

    json: dict[str, Any] | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | list[str] | None = None
    grammar: str | None = None
    whitespace_pattern: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in KINDS if (getattr(self, k) not in (None, False))]
        if len(given) != 1:
            named = ", ".join(given) if given else "none"
            raise FieldError("structured_outputs", f"give exactly one of {', '.join(KINDS)} (got {named})")
        if self.json is not None and not isinstance(self.json, (dict, str, bool)):
            raise FieldError("structured_outputs.json", f"must be a JSON schema object, got {type(self.json).__name__}")
        if not isinstance(self.json_object, bool):
            raise FieldError("structured_outputs.json_object", "must be a bool")
        for name in ("regex", "grammar", "whitespace_pattern"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise FieldError(f"structured_outputs.{name}", "must be a non-empty string")
        if self.choice is not None:
            if isinstance(self.choice, str) or not isinstance(self.choice, (list, tuple)) or not self.choice:
                raise FieldError("structured_outputs.choice", "must be a non-empty list of strings")
            if not all(isinstance(c, str) and c for c in self.choice):
                raise FieldError("structured_outputs.choice", "every choice must be a non-empty string")
            object.__setattr__(self, "choice", tuple(self.choice))

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) not in (None, False))

    def cache_key(self) -> str:
        """A stable text naming this constraint (compiled grammars are cached by it)."""
        value: Any = getattr(self, self.kind)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        elif isinstance(value, tuple):
            value = json.dumps(list(value))
        return f"{self.kind}\x00{self.whitespace_pattern or ''}\x00{value}"
