"""Tool calling: tools into the prompt, a grammar for forced calls, calls parsed back out.

The wire format inside the model's text is the widely trained "Hermes" shape, one block per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A chat template that renders `tools` itself (it mentions the variable) gets them as template
variables; otherwise a system message written here describes the tools and this format. With
`tool_choice` "required" or a named function, the output is constrained by a grammar to such
blocks, so the arguments always parse and match the function's parameters schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}

SYSTEM_PROMPT = """You may call these functions (JSON schemas):
<tools>
{tools}
</tools>
To call one, reply with a block per call:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}
</tool_call>"""


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def template_renders_tools(template: str | None) -> bool:
    """Whether a chat template uses the `tools` variable (then it formats them itself)."""
    if not template:
        return False
    try:
        ast = jinja2.Environment().parse(template)
    except jinja2.TemplateError:
        return False
    return "tools" in jinja2.meta.find_undeclared_variables(ast)


def tools_system_prompt(functions: list[dict[str, Any]]) -> str:
    listed = "\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in functions)
    return SYSTEM_PROMPT.format(tools=listed)


def call_block(name: str, arguments: str) -> str:
    """An assistant's earlier call, written back in the same format the model is told to use."""
    try:
        args: Any = json.loads(arguments) if arguments else {}
    except ValueError:
        args = arguments
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def call_grammar(functions: list[dict[str, Any]], *, parallel: bool) -> str:
    """A Lark grammar (llguidance dialect): one block, or with `parallel` one or more, each a call
    to one of `functions` whose arguments match its parameters schema."""
    options = []
    for f in functions:
        params = f.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object", "properties": {"name": {"const": f["name"]}, "arguments": params},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    schema = {**schema, "x-guidance": JSON_STYLE}
    repeat = ' ("\\n" call)*' if parallel else ""
    return (f"start: call{repeat}\n"
            f'call: "{OPEN}\\n" body "\\n{CLOSE}"\n'
            f"body: %json{json.dumps(schema, ensure_ascii=False)}\n")


@dataclass
class ToolCall:
    index: int
    id: str
    name: str
    arguments: str = ""


@dataclass
class ParseEvent:
    """One piece of a streamed reply: content text, a call's start (id + name), or argument text."""

    kind: str  # "content" | "call" | "arguments"
    text: str = ""
    call: ToolCall | None = None


@dataclass
class ToolCallParser:
    """Splits generated text into content and tool calls as it streams in.

    `incremental` streams argument text as it arrives (safe when a grammar guarantees the
    shape); otherwise a block is held until it closes and is emitted only if it is a valid
    call to a known function (a free-running model may write anything), else it stays content.
    """

    names: set[str]
    incremental: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    _buffer: str = ""
    _in_call: bool = False
    _header_end: int = -1
    _sent: int = 0  # argument characters already emitted for the open call
    _pending_space: str = ""
    content: str = ""

    def feed(self, text: str) -> list[ParseEvent]:
        self._buffer += text
        events: list[ParseEvent] = []
        while True:
            if not self._in_call:
                start = self._buffer.find(OPEN)
                if start < 0:
                    keep = _partial_suffix(self._buffer, OPEN)
                    self._content(events, self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep:]
                    return events
                self._content(events, self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN):]
                self._in_call, self._header_end, self._sent = True, -1, 0
                continue
            end = self._buffer.find(CLOSE)
            if end < 0:
                if self.incremental:
                    self._stream_arguments(events, final=False)
                return events
            body, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE):]
            self._close_call(events, body)
            self._in_call = False

    def finish(self) -> list[ParseEvent]:
        """End of generation: whatever is held is content (or the rest of an unterminated call)."""
        events: list[ParseEvent] = []
        if self._in_call:
            if self.incremental and self._header_end >= 0:
                self._stream_arguments(events, final=True)
            else:
                self._content(events, OPEN + self._buffer)
        else:
            self._content(events, self._buffer)
        if self._pending_space and not self.calls:
            self.content += self._pending_space
            events.append(ParseEvent("content", self._pending_space))
        self._buffer, self._in_call, self._pending_space = "", False, ""
        return events

    def _content(self, events: list[ParseEvent], text: str) -> None:
        """Emit text; whitespace alone is held, and dropped if a call follows it."""
        text = self._pending_space + text
        self._pending_space = ""
        if text and not text.strip():
            self._pending_space = text
            return
        if text:
            self.content += text
            events.append(ParseEvent("content", text))

    def _start_call(self, events: list[ParseEvent], name: str) -> ToolCall:
        self._pending_space = ""
        call = ToolCall(index=len(self.calls), id=new_call_id(), name=name)
        self.calls.append(call)
        events.append(ParseEvent("call", call=call))
        return call

    def _stream_arguments(self, events: list[ParseEvent], *, final: bool) -> None:
        if self._header_end < 0:
            match = _HEADER.match(self._buffer)
            if match is None:
                return
            self._header_end = match.end()
            self._start_call(events, json.loads(f'"{match.group(1)}"'))
        rest = self._buffer[self._header_end:]
        if final:
            safe = rest.rstrip()
            safe = safe[:-1] if safe.endswith("}") else safe
        else:  # hold back what may be the wrapper's closing brace and the start of the close tag
            rest = rest[: len(rest) - _partial_suffix(rest, "\n" + CLOSE)]
            stripped = rest.rstrip()
            safe = stripped[:-1] if stripped.endswith("}") else stripped
        self._emit_arguments(events, safe.rstrip() if final else safe)

    def _emit_arguments(self, events: list[ParseEvent], arguments: str) -> None:
        new = arguments[self._sent:]
        if new:
            self.calls[-1].arguments += new
            self._sent = len(arguments)
            events.append(ParseEvent("arguments", new, self.calls[-1]))

    def _close_call(self, events: list[ParseEvent], body: str) -> None:
        if self.incremental and self._header_end >= 0:
            self._buffer, tail = body, self._buffer
            self._stream_arguments(events, final=True)
            self._buffer = tail
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if (isinstance(parsed, dict) and parsed.get("name") in self.names
                and isinstance(parsed.get("arguments", {}), (dict, str))):
            self._start_call(events, parsed["name"])
            args = parsed.get("arguments", {})
            self._emit_arguments(events, args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))
        else:
            self._content(events, OPEN + body + CLOSE)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def prepare_messages(messages: list[dict[str, Any]], functions: list[dict[str, Any]],
                     template: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages (and template variables) for the chat template, tools included.

    A template that renders `tools` gets them, and the calls and results, in Hugging Face's
    convention (arguments as objects). Otherwise the tools become a system message in the
    format above, earlier calls become call blocks and results `<tool_response>` user turns.
    """
    if template_renders_tools(template):
        out = []
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _as_object(
                    c["function"]["arguments"])}} for c in m["tool_calls"]]
            out.append(m)
        extra = {"tools": [{"type": "function", "function": f} for f in functions]} if functions else {}
        return out, extra
    out = []
    for m in messages:
        if m.get("tool_calls"):
            blocks = "\n".join(call_block(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"])
            text = f"{m['content']}\n{blocks}" if m.get("content") else blocks
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if functions:
        prompt = tools_system_prompt(functions)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out, {}


def _as_object(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
