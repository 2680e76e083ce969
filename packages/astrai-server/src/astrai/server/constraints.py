"""OpenAI's output-shape fields -> the scheduler's StructuredOutputsParams (and the field to blame).

`response_format` (chat), `text.format` (Responses), vLLM's `structured_outputs` extra, and the
grammar behind `tool_choice` "required" / a named function all end up as one constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from astrai.scheduler import FieldError, StructuredOutputsParams
from astrai.server.errors import bad_request
from astrai.server.tools import call_grammar


@dataclass(frozen=True)
class Constraint:
    params: StructuredOutputsParams
    param: str  # the request field it came from, named in errors


def from_format(kind: str, schema: dict[str, Any] | None, param: str) -> Constraint | None:
    """A response_format / text.format of type text, json_object or json_schema."""
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint(StructuredOutputsParams(json_object=True), param)
    if schema is None:
        raise bad_request(f"{param}.schema: required for json_schema", f"{param}.schema")
    return Constraint(StructuredOutputsParams(json=schema), param)


def from_extra(spec: dict[str, Any], param: str = "structured_outputs") -> Constraint:
    """vLLM's extra parameter: exactly one of json, json_object, regex, choice, grammar."""
    try:
        return Constraint(StructuredOutputsParams(**spec), param)
    except FieldError as exc:
        raise bad_request(f"{param}: {exc.detail}", param) from None
    except (TypeError, ValueError) as exc:  # an unknown key: the constructor's own words
        raise bad_request(f"{param}: {exc}", param) from None


def for_tools(functions: list[dict[str, Any]], *, named: str | None, parallel: bool) -> Constraint:
    """tool_choice "required" (any of the tools) or a named function: output is call blocks only."""
    chosen = [f for f in functions if named is None or f["name"] == named]
    return Constraint(StructuredOutputsParams(grammar=call_grammar(chosen, parallel=parallel and named is None)),
                      "tool_choice")
