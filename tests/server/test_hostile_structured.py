"""Hostile structured-output and tool requests: each gets a clear 4xx (or a bounded 200), the server lives on."""

from __future__ import annotations

import httpx

from .conftest import MODEL
from .test_hostile_requests import assert_openai_error

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **fields}


def schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def test_huge_and_deep_schemas_are_compiled_or_refused_quickly(http):
    properties = {f"field_{i}": {"type": "string"} for i in range(2000)}  # ~60 KB: under the body limit
    huge = {"type": "object", "properties": properties, "required": list(properties)}
    response = http.post(CHAT, json=chat(response_format=schema_format(huge)))
    assert response.status_code == 200, response.text  # compiled; 4 tokens cannot finish it: "length"
    assert response.json()["choices"][0]["finish_reason"] == "length"
    deep: dict = {"type": "string"}
    for _ in range(25):  # two JSON levels each: inside the body decoder's 64-level limit
        deep = {"type": "object", "properties": {"x": deep}, "required": ["x"]}
    response = http.post(CHAT, json=chat(response_format=schema_format(deep)))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_openai_error(response, 400, None)
    too_big = {f"f{i}": {"type": "string", "enum": [f"v{j}" for j in range(20)]} for i in range(3000)}
    response = http.post(CHAT, json=chat(response_format=schema_format({"type": "object", "properties": too_big})))
    assert_openai_error(response, 413, None)  # over --max-body-bytes: refused before parsing


def test_recursive_schema_compiles_and_terminates(http):
    tree = {"$defs": {"node": {"type": "object", "properties": {"name": {"type": "string"}, "children": {
        "type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["name", "children"]}},
        "$ref": "#/$defs/node"}
    response = http.post(CHAT, json=chat(max_tokens=24, temperature=2.0, seed=1, response_format=schema_format(tree)))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
    endless = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}  # no finite instance
    response = http.post(CHAT, json=chat(max_tokens=8, response_format=schema_format(endless)))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_openai_error(response, 400, "response_format")


def test_thousands_of_tools(http):
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
             for i in range(3000)]
    response = http.post(CHAT, json=chat(tools=tools, tool_choice="required"))
    assert response.status_code in (400, 413), response.text
    assert_openai_error(response, response.status_code, None)


def test_bad_logit_bias_ids_and_values(http):
    for bias, needle in [({"-3": 1}, "-3"), ({"49152": 1}, "49152"), ({"1": "x"}, "logit_bias"),
                         ({str(i): 1 for i in range(400)}, "300")]:
        error = assert_openai_error(http.post(CHAT, json=chat(logit_bias=bias)), 400, "logit_bias")
        assert needle in error["message"], error


def test_server_is_healthy_after_the_hostile_batch(server, http):
    assert httpx.get(server.base_url + "/health").status_code == 200
    response = http.post(CHAT, json=chat(max_tokens=3, temperature=0, response_format={"type": "json_object"}))
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
