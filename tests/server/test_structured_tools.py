"""Structured outputs and tool calls through the official SDK (and langchain-openai) against the real server."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from .conftest import API_KEY, MODEL

ASK = [{"role": "user", "content": "Give me a city and its population."}]


class City(BaseModel):
    name: str
    population: int = Field(ge=0)
    capital: bool


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                       "required": ["zone"]}}}


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_parse_with_a_pydantic_model(client, temperature):
    completion = client.beta.chat.completions.parse(model=MODEL, messages=ASK, response_format=City,
                                                    max_tokens=40, temperature=temperature, seed=4)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, City), message.content


def test_json_schema_streamed_and_json_object(client):
    schema = City.model_json_schema()
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=1.0, seed=2, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=1.0, seed=3,
                                           response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_vllm_structured_outputs_extras(client):
    def ask(**spec):
        reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=20, temperature=1.2, seed=1,
                                               extra_body={"structured_outputs": spec})
        return reply.choices[0].message.content
    assert ask(choice=["red", "green"]) in ("red", "green")
    assert ask(regex=r"[0-9]{3}-[0-9]{4}")[3] == "-"
    assert ask(grammar='start: "yes" | "no"') in ("yes", "no")
    text = client.completions.create(model=MODEL, prompt="Colour:", max_tokens=8,
                                     extra_body={"structured_outputs": {"choice": ["red", "blue"]}}).choices[0].text
    assert text in ("red", "blue")


@pytest.mark.parametrize(("body", "param", "needle"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}}}}, "response_format", "nope"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "yaml"),
    ({"structured_outputs": {"regex": "a(b"}}, "structured_outputs", "regex"),
    ({"structured_outputs": {"choice": ["a"], "regex": "b"}}, "structured_outputs", "exactly one"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name", "name"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias", "99999999"),
    ({"logit_bias": {"5": 250}}, "logit_bias", "100"),
    ({"logit_bias": {"abc": 1}}, "logit_bias", "abc"),
])
def test_bad_new_fields_are_400_with_the_param(http, body, param, needle):
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 4, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error
    assert not error["message"].startswith(f"{param}: {param}:")


def test_required_tool_call_is_valid_for_its_schema(client):
    reply = client.chat.completions.create(model=MODEL, max_tokens=48, temperature=1.5, seed=7,
                                           messages=[{"role": "user", "content": "Weather in Paris?"}],
                                           tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_named_tool_call_streams_id_and_name_first(client):
    stream = client.chat.completions.create(model=MODEL, max_tokens=48, temperature=1.0, seed=8, stream=True,
                                            messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER, TIME],
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert all(tc.id is None and tc.function.name is None for tc in calls[1:])
    assert len(calls) > 2  # arguments arrive in fragments
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert deltas[-1].finish_reason == "tool_calls"


def test_tool_results_go_back_into_the_conversation(client):
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], max_tokens=8,
                                           temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    auto = client.chat.completions.create(model=MODEL, messages=messages[:1], tools=[WEATHER], tool_choice="auto",
                                          max_tokens=8, temperature=0)
    assert auto.choices[0].message.content is not None or auto.choices[0].message.tool_calls


def test_n_choices_and_usage(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=6, temperature=1.0, seed=5,
                                           extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 18
    assert len({c.message.content for c in reply.choices}) > 1
    stream = client.completions.create(model=MODEL, prompt="Once upon a time", n=2, max_tokens=4, temperature=1.0,
                                       seed=5, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert chunks[-1].usage.completion_tokens == 8
    best = client.completions.create(model=MODEL, prompt="Once upon a time", n=1, best_of=3, max_tokens=4,
                                     temperature=1.0, seed=5, extra_body={"ignore_eos": True})
    assert len(best.choices) == 1 and best.usage.completion_tokens == 12


def test_logit_bias_through_the_api(client, tokenizer):
    base = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=1, temperature=0)
    first = tokenizer.encode(base.choices[0].text)[0]
    banned = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=1, temperature=0,
                                       logit_bias={str(first): -100})
    assert banned.choices[0].text != base.choices[0].text


def test_echo_with_prompt_logprobs(client, tokenizer):
    prompt = "The quick brown fox"
    ids = tokenizer.encode(prompt, add_special_tokens=True)
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    lp = reply.choices[0].logprobs
    assert reply.choices[0].text == prompt and reply.usage.completion_tokens == 0
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v < 0 for v in lp.token_logprobs[1:]) and all(len(t) == 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == prompt
    more = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, echo=True, logprobs=0, temperature=0)
    assert len(more.choices[0].logprobs.tokens) == len(ids) + 2
    assert more.choices[0].logprobs.token_logprobs[1:len(ids)] == pytest.approx(lp.token_logprobs[1:], abs=1e-4)


def test_langchain_structured_output_and_bind_tools(server):
    llm = ChatOpenAI(model=MODEL, base_url=server.v1, api_key=API_KEY, max_tokens=48, temperature=1.0, max_retries=0)
    city = llm.with_structured_output(City).invoke("Name a city.")
    assert isinstance(city, City)

    def get_weather(city: str, unit: str) -> str:
        """Current weather for a city (unit: c or f)."""
        return "sunny"

    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Rome?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert set(message.tool_calls[0]["args"]) == {"city", "unit"}


def test_many_constrained_requests_at_once(server):
    import concurrent.futures

    schema = City.model_json_schema()

    def one(i: int) -> str:
        with httpx.Client(timeout=120) as h:
            r = h.post(server.v1 + "/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": MODEL, "messages": ASK, "max_tokens": 32, "temperature": 2.0, "seed": i,
                             "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for text in pool.map(one, range(4)):
            jsonschema.validate(json.loads(text), schema)


def test_sdk_errors_for_tools(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=ASK, tools=[{"type": "web_search"}], max_tokens=2)
