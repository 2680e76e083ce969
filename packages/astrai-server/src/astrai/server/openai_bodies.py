"""Chat and legacy completions response bodies, SSE chunks and logprobs, as plain dicts in exactly OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

from astrai.scheduler import EngineClient
from astrai.server.choice import ChoiceState
from astrai.server.tools import ToolCall
from astrai.server.usage import TokenUsage

DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    """One server-sent event as OpenAI writes it."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class TokenText:
    """Token id -> text and bytes for logprobs, cached per engine's tokenizer."""

    def __init__(self, engine: EngineClient) -> None:
        self._tokenizer = engine.tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = text
        return text


def chat_logprobs(entries: list[dict], token_text: TokenText) -> dict:
    """Chat format: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}."""
    content = []
    for entry in entries:
        text = token_text(entry["token_id"])
        top = [{"token": token_text(tid), "logprob": _finite(lp), "bytes": list(token_text(tid).encode())}
               for tid, lp in entry.get("top") or ()]
        content.append({"token": text, "logprob": _finite(entry["logprob"]), "bytes": list(text.encode()),
                        "top_logprobs": top})
    return {"content": content}


def completion_logprobs(entries: list[dict], token_text: TokenText, text_offset: int) -> dict:
    """Legacy completions format: parallel lists of tokens, logprobs, top dicts and text offsets."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    offset = text_offset
    for entry in entries:
        text = token_text(entry["token_id"])
        tokens.append(text)
        token_logprobs.append(_finite(entry["logprob"]))
        tops.append({token_text(tid): _finite(lp) for tid, lp in entry.get("top") or ()})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def _finite(value: float) -> float:
    """JSON has no -inf: clamp impossible tokens to a very negative number like OpenAI does."""
    value = float(value)
    return value if value > -9999.0 else -9999.0


def chat_completion(request_id: str, created: int, model: str, choices: list[ChoiceState],
                    token_text: TokenText | None, messages: list[dict] | None = None) -> dict:
    """`messages`: per choice, the message when tools split the text into content and calls."""
    out = []
    for i, c in enumerate(choices):
        message = messages[i] if messages else {"role": "assistant", "content": c.text, "refusal": None}
        finish = "tool_calls" if message.get("tool_calls") and c.finish_reason == "stop" else c.finish_reason
        out.append({"index": i, "message": message,
                    "logprobs": chat_logprobs(c.logprobs, token_text) if token_text else None,
                    "finish_reason": finish})
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": out, "usage": TokenUsage.of(choices).completions_body()}


def tool_message(content: str, calls: list[ToolCall]) -> dict:
    """An assistant message with OpenAI's tool_calls (content null when only calls were made)."""
    message: dict[str, Any] = {"role": "assistant", "content": content if content.strip() else None, "refusal": None}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    elif message["content"] is None:
        message["content"] = content
    return message


def prompt_logprobs(choice: ChoiceState, token_text: TokenText) -> dict:
    """Echoed prompt in the legacy format: the first token has no logprob (null), as OpenAI sends."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    offset = 0
    for tid, entry in zip(choice.prompt_ids, choice.prompt_logprobs or [], strict=False):
        text = token_text(tid)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if entry is None:
            token_logprobs.append(None)
            tops.append(None)
        else:
            token_logprobs.append(_finite(entry["logprob"]))
            tops.append({token_text(t): _finite(lp) for t, lp in entry.get("top") or ()})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def join_logprobs(first: dict | None, second: dict | None) -> dict | None:
    if first is None or second is None:
        return first or second
    return {key: first[key] + second[key] for key in first}


def text_completion(request_id: str, created: int, model: str, choices: list[ChoiceState],
                    token_text: TokenText | None, echo_texts: list[str] | None,
                    counted: list[ChoiceState] | None = None) -> dict:
    """`counted`: every sample generated (best_of), for usage; `choices`: the ones returned."""
    out = []
    for i, c in enumerate(choices):
        prefix = echo_texts[i] if echo_texts else ""
        logprobs = completion_logprobs(c.logprobs, token_text, len(prefix)) if token_text else None
        if token_text and echo_texts and c.prompt_logprobs is not None:
            logprobs = join_logprobs(prompt_logprobs(c, token_text), logprobs)
        out.append({"index": i, "text": prefix + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason})
    return {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": out, "usage": TokenUsage.of(counted or choices).completions_body()}


def chat_chunk(request_id: str, created: int, model: str, index: int, delta: dict, *,
               finish_reason: str | None = None, logprobs: dict | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "system_fingerprint": None,
             "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def completion_chunk(request_id: str, created: int, model: str, index: int, text: str, *,
                     finish_reason: str | None = None, logprobs: dict | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": request_id, "object": "text_completion", "created": created, "model": model,
             "system_fingerprint": None,
             "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(request_id: str, created: int, model: str, obj: str, choices: list[ChoiceState]) -> dict:
    """The extra last chunk of stream_options.include_usage: empty choices, the usage."""
    return {"id": request_id, "object": obj, "created": created, "model": model, "system_fingerprint": None,
            "choices": [], "usage": TokenUsage.of(choices).completions_body()}
