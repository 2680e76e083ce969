"""OpenAI request fields -> the engine's SamplingParams (vLLM names)."""

from __future__ import annotations

from typing import Any

from astrai.scheduler import SamplingParams
from astrai.server.errors import bad_request
from astrai.server.protocol import ChatCompletionRequest, CompletionRequest


def build_sampling_params(req: ChatCompletionRequest | CompletionRequest, max_tokens: int) -> SamplingParams:
    """Only fields the client set are passed, so the engine's defaults apply to the rest."""
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "seed", "min_tokens", "ignore_eos"):
        value = getattr(req, name)
        if value is not None:
            kwargs[name] = value
    if req.top_k is not None and req.top_k > 0:
        kwargs["top_k"] = req.top_k
    if req.top_p == 0.0:  # keep only the most likely token: that is greedy decoding
        kwargs.pop("top_p")
        kwargs["temperature"] = 0.0
    if req.stop_list:
        kwargs["stop"] = list(req.stop_list)
    if req.num_logprobs is not None:
        kwargs["logprobs"] = req.num_logprobs
    if req.min_tokens is not None and req.min_tokens > max_tokens:
        raise bad_request(f"min_tokens ({req.min_tokens}) must not exceed max_tokens ({max_tokens})", "min_tokens")
    try:
        return SamplingParams(**kwargs)
    except (ValueError, TypeError) as exc:
        raise bad_request(f"invalid sampling parameters: {exc}") from None
