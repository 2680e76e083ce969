"""OpenAI's output-shape fields -> the scheduler's StructuredOutputsParams (and the field to blame).

`plan_output` is the one constraint-planning path of chat, completions and the Responses API:
the grammar behind `tool_choice` "required" / a named function comes first, then the output
format (`response_format` in chat, `text.format` in Responses), then vLLM's `structured_outputs`
extra; at most one of them constrains the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import FieldError, StructuredOutputsParams
from astrai.server.errors import bad_request
from astrai.server.tools import ToolCallParser, call_grammar


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


@dataclass(frozen=True)
class OutputFormat:
    """A requested output format: `kind` text, json_object or json_schema, and the field it came from."""

    kind: str
    schema: dict[str, Any] | None
    param: str


@dataclass(frozen=True)
class OutputPlan:
    """What a request's output must look like: its constraint, and the tools to parse out of the text."""

    constraint: Constraint | None = None
    tool_names: frozenset[str] = field(default_factory=frozenset)  # non-empty: parse tool calls out of the text
    forced_tools: bool = False  # required / named: a grammar guarantees the calls' shape

    def parser(self, *, incremental: bool | None = None) -> ToolCallParser | None:
        """A parser of tool calls (None without tools); incremental when a grammar forces the calls."""
        if not self.tool_names:
            return None
        return ToolCallParser(set(self.tool_names), incremental=self.forced_tools if incremental is None else incremental)


def plan_output(functions: list[dict[str, Any]], *, tool_choice: Any, named: str | None, parallel: bool,
                output_format: OutputFormat | None = None, extra: dict[str, Any] | None = None) -> OutputPlan:
    """The constraint and tool parsing for a request's tools, `tool_choice` ("none", "auto", "required"
    or the function `named`), output format and `structured_outputs` extra."""
    if not functions or tool_choice == "none":
        constraint = None
        names: frozenset[str] = frozenset()
        forced = False
    else:
        names = frozenset(f["name"] for f in functions)
        forced = tool_choice == "required" or named is not None
        constraint = for_tools(functions, named=named, parallel=parallel) if forced else None
    if constraint is None and output_format is not None:
        constraint = from_format(output_format.kind, output_format.schema, output_format.param)
    if constraint is None and extra:
        constraint = from_extra(extra)
    return OutputPlan(constraint, names, forced)
