"""The smaller endpoints and options: tokenize/detokenize, echo, model card, multi-prompt streams."""

from __future__ import annotations

import json

from .conftest import MAX_MODEL_LEN, MODEL


def test_tokenize_matches_the_tokenizer(http, tokenizer):
    text = "Hello, wörld! 👋"
    reply = http.post("/tokenize", json={"model": MODEL, "prompt": text}).json()
    assert reply["tokens"] == list(tokenizer.encode(text)) and reply["count"] == len(reply["tokens"])
    assert reply["max_model_len"] == MAX_MODEL_LEN
    messages = [{"role": "user", "content": text}]
    chat = http.post("/tokenize", json={"messages": messages}).json()
    assert chat["tokens"] == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                tokenize=True))
    back = http.post("/detokenize", json={"tokens": reply["tokens"]}).json()
    assert back["prompt"] == text


def test_echo_returns_prompt_and_completion(http):
    body = {"model": MODEL, "prompt": "The sky is", "max_tokens": 4, "temperature": 0}
    plain = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    echoed = http.post("/v1/completions", json={**body, "echo": True}).json()["choices"][0]["text"]
    assert echoed == "The sky is" + plain


def test_model_card_reports_the_usable_context(http):
    card = http.get("/v1/models").json()["data"][0]
    assert card["id"] == MODEL and card["object"] == "model" and card["max_model_len"] == MAX_MODEL_LEN


def test_streamed_batch_keeps_choices_apart(http):
    prompts = ["One, two,", "Red, green,"]
    body = {"model": MODEL, "prompt": prompts, "max_tokens": 5, "temperature": 0}
    expected = {c["index"]: c["text"] for c in http.post("/v1/completions", json=body).json()["choices"]}
    texts = {0: "", 1: ""}
    finish = {}
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        choice = json.loads(line[len("data: "):])["choices"][0]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert texts == expected and set(finish) == {0, 1}
