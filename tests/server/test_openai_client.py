"""The official `openai` client against the real server: results equal the engine's own, usage is exact."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest
from astrai.scheduler import SamplingParams

from .conftest import API_KEY, MAX_MODEL_LEN, MODEL, wait_idle

MESSAGES = [{"role": "user", "content": "Name three colors."}]
PROMPT = "The capital of France is"


def engine_chat(engine, tokenizer, messages, **params):
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return ids, engine.generate([ids], SamplingParams(**params))[0]


def engine_complete(engine, tokenizer, prompt, **params):
    ids = list(tokenizer.encode(prompt, add_special_tokens=True))
    return ids, engine.generate([ids], SamplingParams(**params))[0]


def test_chat_matches_engine_and_counts_tokens(client, engine, tokenizer):
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0)
    ids, ref = engine_chat(engine, tokenizer, MESSAGES, max_tokens=16, temperature=0.0)
    assert resp.object == "chat.completion" and resp.model == MODEL and resp.id.startswith("chatcmpl-")
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ref.text and ref.text
    assert choice.finish_reason == ref.finish_reason
    assert resp.usage.prompt_tokens == len(ids)
    assert resp.usage.completion_tokens == len(ref.token_ids)
    assert resp.usage.total_tokens == len(ids) + len(ref.token_ids)


def test_chat_stream_equals_non_stream(client, engine, tokenizer):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    ids, ref = engine_chat(engine, tokenizer, MESSAGES, max_tokens=16, temperature=0.0)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == ref.text
    assert [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason] == [ref.finish_reason]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.prompt_tokens == len(ids)
    assert usage_chunk.usage.completion_tokens == len(ref.token_ids)
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream_and_not(client, engine, tokenizer):
    ids, ref = engine_complete(engine, tokenizer, PROMPT, max_tokens=12, temperature=0.0)
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    assert resp.object == "text_completion"
    assert resp.choices[0].text == ref.text
    assert resp.choices[0].finish_reason == ref.finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (len(ids), 12)

    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-2].choices[0].finish_reason == "length"


def test_completions_token_ids_and_batches(client, engine, tokenizer):
    prompts = ["Once upon a time", "The sky is"]
    refs = [engine_complete(engine, tokenizer, p, max_tokens=6, temperature=0.0) for p in prompts]
    resp = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0)
    assert sorted(c.index for c in resp.choices) == [0, 1]
    by_index = {c.index: c.text for c in resp.choices}
    assert [by_index[0], by_index[1]] == [r.text for _, r in refs]
    assert resp.usage.prompt_tokens == sum(len(ids) for ids, _ in refs)
    assert resp.usage.completion_tokens == 12

    token_resp = client.completions.create(model=MODEL, prompt=refs[0][0], max_tokens=6, temperature=0)
    assert token_resp.choices[0].text == refs[0][1].text


def test_stop_string_ends_the_text(client, engine, tokenizer):
    _, ref = engine_chat(engine, tokenizer, MESSAGES, max_tokens=24, temperature=0.0)
    words = ref.text.split()
    assert len(words) >= 3, ref.text
    stop = words[2]
    expected = ref.text[: ref.text.index(stop)]
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0, stop=[stop])
    assert resp.choices[0].message.content == expected
    assert resp.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0,
                                            stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_seed_reproducible(client):
    def sample(seed: int) -> str:
        resp = client.completions.create(model=MODEL, prompt="My favourite word is", max_tokens=12,
                                         temperature=1.5, seed=seed)
        return resp.choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, *(sample(s) for s in (1, 2, 3))}) >= 2


def test_max_completion_tokens_and_logprobs(client):
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 5 and resp.choices[0].finish_reason == "length"
    content = resp.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == resp.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs), abs=1e-5)


def test_models_endpoint(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_sdk_exception_classes(server, tiny_server):
    good = openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as bad:
        good.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match="n: Input should be less than or equal to 16"):
        good.chat.completions.create(model=MODEL, messages=MESSAGES, n=17)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        good.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"

    # tiny_server admits one request: hold one stream open, the next request is refused with 429.
    tiny = openai.OpenAI(base_url=tiny_server.v1, api_key="unused", max_retries=0, timeout=60)
    with httpx.stream("POST", tiny_server.v1 + "/completions", timeout=60,
                      json={"model": MODEL, "prompt": "Hello", "max_tokens": 200, "ignore_eos": True,
                            "stream": True}) as held:
        assert held.status_code == 200
        lines = held.iter_lines()  # keep a reference: a collected iterator closes the connection
        assert next(lines).startswith("data: ")
        with pytest.raises(openai.RateLimitError):
            tiny.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    # the held stream was closed mid-way: it is aborted and the slot comes back
    wait_idle(tiny_server.app.state.service.holder.peek())
    assert tiny.completions.create(model=MODEL, prompt="Hi", max_tokens=2).usage.completion_tokens == 2


def test_stream_is_incremental(client, trace_log):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=48, temperature=0,
                                            stream=True, extra_body={"ignore_eos": True})
    seen_before_end = None
    pieces = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if seen_before_end is None:
                seen_before_end = trace_log.finish_reason(chunk.id) is None
    assert seen_before_end, "the first content chunk only arrived after the request had finished"
    assert pieces > 1
    deadline = time.monotonic() + 30  # the step's trace event is emitted after its outputs
    while trace_log.finish_reason(chunk.id) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trace_log.finish_reason(chunk.id) == "length"


def test_non_streaming_disconnect_aborts(server, engine, trace_log):
    # A raw connection, closed once the trace shows the request decoding: the test waits for that
    # event, never for a speed (ignore_eos and the longest output the server allows keep it running
    # for hundreds of steps after the close, on any CPU).
    body = json.dumps({"model": MODEL, "prompt": "Tell me a story", "ignore_eos": True,
                       "max_tokens": MAX_MODEL_LEN - 16}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        ours = trace_log.wait_decoding("cmpl-")
        assert trace_log.finish_reason(ours) is None
    stats = wait_idle(engine)
    assert [r for r in trace_log.arrived() if r.startswith("cmpl-")] == [ours]
    assert trace_log.finish_reason(ours) == "abort"
    assert stats["num_free_pages"] + stats["num_cached_pages"] == stats["num_pages"]


def test_the_same_seeded_request_twice_gives_the_same_answer(client):
    """The second time its prompt comes from the prefix cache; batch-invariant kernels keep every
    logit, so a pinned seed reproduces the text and the logprobs exactly."""
    messages = [{"role": "system", "content": "You are a poet. Answer in one short stanza about the topic given."},
                {"role": "user", "content": "The sea at night, the lighthouse and the wind."}]
    answers = [client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0.9,
                                              seed=7, logprobs=True, top_logprobs=2) for _ in range(2)]
    first, second = (a.choices[0] for a in answers)
    assert first.message.content == second.message.content and first.message.content
    assert [t.logprob for t in first.logprobs.content] == [t.logprob for t in second.logprobs.content]
    assert answers[1].usage.prompt_tokens_details.cached_tokens > 0


def test_health_names_the_kernels_and_the_weight_format(server, engine):
    body = httpx.get(server.base_url + "/health").json()
    info = engine.describe()
    assert body["status"] == "ok"
    assert body["engine"] == {"forward": info.forward, "kernels": info.kernels, "weights": info.weights,
                              "dtype": info.dtype, "kv_cache_dtype": info.kv_cache_dtype}
    assert body["engine"]["kernels"] in ("avx2", "avx512", "amx", "torch")
    assert "(packed)" in body["engine"]["weights"]
