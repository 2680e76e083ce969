"""`astrai serve --model FILE.gguf` as a user runs it on a Gemma-3-style file without a chat
template (llama.cpp's conversion of a tiny random model, tests/data/tiny/): the served model id
is the file's `general.name`, and the official `openai` client chats with it in Gemma's turn
format, stopping at `<end_of_turn>`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import openai
from astrai.model import load_model

GGUF = Path(__file__).resolve().parents[1] / "data" / "tiny" / "tiny-gemma3-f32.gguf"


def test_served_id_is_general_name_and_chat_uses_the_turn_format():
    proc = subprocess.Popen([sys.executable, "-m", "astrai.server.cli", "serve", "--port", "0", "--model", str(GGUF),
                             "--dtype", "float32", "--num-pages", "256", "--shutdown-timeout", "2", "--no-embeddings"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next((m.group(1) for line in proc.stdout if (m := re.search(r"at (http://127\.0\.0\.1:\d+)", line))), None)
        assert url, "no URL printed"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=20)
        assert [m.id for m in client.models.list().data] == ["Tiny Gemma3"]
        end_of_turn = load_model(GGUF)[1].backend.token_to_id("<end_of_turn>")
        reply = client.chat.completions.create(
            model="Tiny Gemma3", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0,
            logit_bias={str(end_of_turn): 100})
        assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content == ""
        # <bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n, and the stop token itself
        assert reply.usage.completion_tokens == 1 and reply.usage.prompt_tokens >= 8
    finally:
        proc.terminate()
        proc.wait(30)
