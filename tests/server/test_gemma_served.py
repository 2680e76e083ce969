"""The real Gemma 3 270M Q4_K_M file served as a user runs it (every block type packed, the fused
native step, the file's missing chat template replaced by Gemma's turns): the official `openai`
client gets chat, structured outputs, a tool call, n choices, prompt logprobs, prefix-cache hits,
and correct answers while the KV pool is too small for all requests (preemption), as on SmolLM2.
The file is assembled once per machine into the user's cache folder (bench/fixtures)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import openai
import pytest
from astrai.scheduler import Engine, SamplingParams
from astrai.server import ServerConfig, create_app
from pydantic import BaseModel

from .conftest import serve, wait_healthy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/fixtures assembles and caches the Gemma file
    sys.path.insert(0, str(REPO))
from bench.fixtures.gemma_file import gemma_gguf  # noqa: E402

MODEL = "gemma3"


@pytest.fixture(scope="module")
def engine():
    with Engine.from_pretrained(str(gemma_gguf()), max_model_len=1024, num_pages=512, max_num_seqs=16) as eng:
        info = eng.describe()
        assert info.forward == "native" and info.weights == "Q4_K+Q5_0+Q6_K+Q8_0 (packed), float32"
        yield eng


@pytest.fixture(scope="module")
def client(engine):
    config = ServerConfig(model=MODEL, max_num_seqs=16, max_queue=32)
    with serve(create_app(config, engine=engine)) as running:
        wait_healthy(running.base_url)
        yield openai.OpenAI(base_url=running.v1, api_key="unused", max_retries=0, timeout=300)


def test_chat_in_the_turn_format(client, engine):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    text = reply.choices[0].message.content
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert engine.tokenizer.decode(ids[:3], skip_special_tokens=False) == "<bos><start_of_turn>user"
    assert reply.usage.prompt_tokens == len(ids) and text  # a base model: its text is not judged
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == text
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the prompt's pages came from the prefix cache


class City(BaseModel):
    name: str
    country: str


def test_structured_output_and_a_tool_call(client):
    parsed = client.beta.chat.completions.parse(
        model=MODEL, response_format=City, max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "Give the capital of Italy as JSON with name and country."}])
    assert isinstance(parsed.choices[0].message.parsed, City)
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                               "required": ["city"]}}}
    reply = client.chat.completions.create(model=MODEL, tools=[weather], tool_choice="required", max_tokens=32,
                                           temperature=0, messages=[{"role": "user", "content": "Weather in Oslo?"}])
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def test_n_choices_and_prompt_logprobs(client):
    reply = client.chat.completions.create(model=MODEL, n=3, max_tokens=8, temperature=1.0, seed=11,
                                           messages=[{"role": "user", "content": "Name a color."}])
    assert sorted(c.index for c in reply.choices) == [0, 1, 2] and reply.usage.completion_tokens <= 24
    echoed = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=1, temperature=0, echo=True,
                                       logprobs=2)
    lp = echoed.choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(x is not None and x <= 0 for x in lp.token_logprobs[1:])


def test_preemption_keeps_every_answer(engine):
    prompts = [engine.tokenizer.encode(f"Write a long story about a lighthouse number {i}:", add_special_tokens=True)
               for i in range(4)]
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    alone = [engine.generate([p], params)[0].token_ids for p in prompts]
    with engine.with_settings(num_pages=14) as tight:  # 224 slots for four ~80-token requests
        results: list = [None] * len(prompts)

        def run(i: int) -> None:
            results[i] = tight.generate([prompts[i]], params)[0].token_ids

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert tight.stats()["num_preemptions_total"] > 0
    assert results == alone  # batch-invariant kernels: recomputed after preemption, the same tokens
