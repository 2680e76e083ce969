"""The tool-call text format: grammar-shaped output streams as OpenAI tool-call deltas, free text stays text."""

from __future__ import annotations

import json

from astrai.server.tools import ToolCallParser, call_block, template_renders_tools, tools_system_prompt

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": {"n": 2}}}\n</tool_call>'


def feed_in_pieces(parser: ToolCallParser, text: str, size: int) -> list:
    events = []
    for i in range(0, len(text), size):
        events += parser.feed(text[i:i + size])
    return events + parser.finish()


def test_incremental_streams_name_first_then_argument_fragments():
    for size in (1, 3, 7, len(CALL)):
        parser = ToolCallParser({"get_weather"}, incremental=True)
        events = feed_in_pieces(parser, CALL + "\n" + CALL.replace("Paris", "Oslo"), size)
        kinds = [e.kind for e in events]
        assert kinds[0] == "call" and kinds.count("call") == 2 and "content" not in kinds[:kinds.index("call", 1)]
        first = "".join(e.text for e in events[1:kinds.index("call", 1)] if e.kind == "arguments")
        assert json.loads(first) == {"city": "Paris", "days": {"n": 2}}
        assert [c.name for c in parser.calls] == ["get_weather", "get_weather"]
        assert json.loads(parser.calls[1].arguments)["city"] == "Oslo"
        assert parser.calls[0].id != parser.calls[1].id and parser.calls[0].id.startswith("call_")
        assert parser.content.strip() == ""


def test_free_text_with_invalid_or_unknown_call_stays_content():
    text = 'Sure! <tool_call>{"name": "nope", "arguments": {}}</tool_call> and <tool_call>{broken</tool_call> <tool'
    for size in (1, 5, len(text)):
        parser = ToolCallParser({"get_weather"})
        events = feed_in_pieces(parser, text, size)
        assert all(e.kind == "content" for e in events)
        assert "".join(e.text for e in events) == text and parser.calls == []


def test_valid_call_in_free_text_is_found():
    parser = ToolCallParser({"get_weather"})
    events = feed_in_pieces(parser, "Let me check. " + CALL, 4)
    assert [e.kind for e in events][-2:] == ["call", "arguments"]
    assert parser.content == "Let me check. "
    assert json.loads(parser.calls[0].arguments)["days"] == {"n": 2}


def test_prompt_helpers():
    assert template_renders_tools("{% if tools %}{{ tools | tojson }}{% endif %}{{ messages }}")
    assert not template_renders_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    prompt = tools_system_prompt([{"name": "get_weather", "parameters": {"type": "object"}}])
    assert "<tool_call>" in prompt and '{"name":"get_weather"' in prompt
    assert call_block("f", '{"a": 1}') == '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def test_messages_for_a_template_with_and_without_tools():
    from astrai.server.tools import prepare_messages

    functions = [{"name": "get_weather", "parameters": {"type": "object"}}]
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    aware = "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    messages, extra = prepare_messages(history, functions, aware)
    assert extra == {"tools": [{"type": "function", "function": functions[0]}]}
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome"} and messages[2]["role"] == "tool"
    plain, extra = prepare_messages(history, functions, "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert extra == {} and plain[0]["role"] == "system" and "get_weather" in plain[0]["content"]
    assert plain[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    assert plain[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
