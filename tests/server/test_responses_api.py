"""POST /v1/responses through the official SDK: text and message input, streaming events, structured output."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import openai
import pytest
from pydantic import BaseModel

from .conftest import API_KEY, MODEL, wait_idle


class Answer(BaseModel):
    answer: str
    confident: bool


def test_text_input_with_instructions(client, engine, tokenizer):
    resp = client.responses.create(model=MODEL, input="Name a colour.", instructions="Answer in one word.",
                                   max_output_tokens=8, temperature=0)
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}]
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    from astrai.scheduler import SamplingParams
    ref = engine.generate([ids], SamplingParams(max_tokens=8, temperature=0.0))[0]
    assert resp.object == "response" and resp.id.startswith("resp_")
    assert resp.output_text == ref.text
    assert resp.usage.input_tokens == len(ids) and resp.usage.output_tokens == len(ref.token_ids)
    assert resp.status == ("incomplete" if ref.finish_reason == "length" else "completed")
    if resp.status == "incomplete":
        assert resp.incomplete_details.reason == "max_output_tokens"


def test_message_list_input_and_stream_events(client):
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}]
    with client.responses.stream(model=MODEL, input=items, max_output_tokens=6, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and text


def test_text_format_structured_output(client):
    parsed = client.responses.parse(model=MODEL, input="Is the sky blue?", text_format=Answer,
                                    max_output_tokens=60, temperature=1.0)
    assert isinstance(parsed.output_parsed, Answer)


def test_function_tools_in_responses(client):
    tool = {"type": "function", "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}, "strict": True}
    resp = client.responses.create(model=MODEL, input="Weather in Rome?", tools=[tool], tool_choice="required",
                                   max_output_tokens=40, temperature=1.0)
    calls = [o for o in resp.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    follow = client.responses.create(model=MODEL, tools=[tool], max_output_tokens=4, temperature=0, input=[
        {"role": "user", "content": "Weather in Rome?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    assert follow.status in ("completed", "incomplete")


@pytest.mark.parametrize(("body", "param"), [
    ({"store": True}, "store"),
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"background": True}, "background"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": []}, "input"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
])
def test_unsupported_responses_state_is_400(http, body, param):
    response = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 4, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.json()


def test_responses_sdk_errors(client, server):
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_1", max_output_tokens=2)
    missing = httpx.get(server.v1 + "/responses/resp_1", headers={"Authorization": f"Bearer {API_KEY}"})
    assert missing.status_code == 404 and "not stored" in missing.json()["error"]["message"]


def test_a_client_that_leaves_is_aborted_and_logged_as_disconnected(server, engine, trace_log, caplog):
    """As in chat: a raw connection closed once the trace shows the response decoding. A schema of at
    least 400 integers cannot be finished within max_output_tokens, so the request is still running
    when the client leaves, on any CPU; the test waits for events, never for a speed."""
    caplog.set_level(logging.INFO, logger="astrai.server")
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
    body = json.dumps({"model": MODEL, "input": "Count upwards from one.", "max_output_tokens": 200,
                       "text": {"format": {"type": "json_schema", "name": "numbers", "schema": schema}}}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        ours = trace_log.wait_decoding("resp_")
        assert trace_log.finish_reason(ours) is None
    stats = wait_idle(engine)
    assert trace_log.finish_reason(ours) == "abort"
    assert stats["num_free_pages"] + stats["num_cached_pages"] == stats["num_pages"]
    deadline = time.monotonic() + 60  # the log line is written once the handler has returned
    while not (lines := [r.getMessage() for r in caplog.records if ours in r.getMessage()]):
        assert time.monotonic() < deadline, "no request log line for the abandoned response"
        time.sleep(0.01)
    assert " 499 " in lines[0] and "disconnected=True" in lines[0], lines
