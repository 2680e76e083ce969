"""OpenAI request fields -> the engine's SamplingParams (vLLM names)."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from astrai.scheduler import SamplingParams, StructuredOutputsParams
from astrai.server.errors import bad_request
from astrai.server.openai_models import ChatCompletionRequest, CompletionRequest
from starlette.requests import Request


class SamplingFieldsView(Protocol):
    """The request fields read here (the Responses API's request supplies them too)."""

    temperature: float | None
    top_p: float | None
    top_k: int | None
    min_p: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    repetition_penalty: float | None
    seed: int | None
    min_tokens: int | None
    ignore_eos: bool | None
    stop_list: list[str] | None
    num_logprobs: int | None
    token_bias: dict[int, float] | None
    speculation: bool | None


def build_sampling_params(req: ChatCompletionRequest | CompletionRequest | SamplingFieldsView, max_tokens: int, *,
                          structured: StructuredOutputsParams | None = None, n: int = 1,
                          prompt_logprobs: int | None = None, logprobs: int | None = None,
                          tenant: str | None = None) -> SamplingParams:
    """Only fields the client set are passed, so the engine's defaults apply to the rest.

    `tenant` (`tenant_of(request)`) scopes what the engine learns across requests."""
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "n": n, "tenant": tenant}
    if structured is not None:
        kwargs["structured_outputs"] = structured
    if req.token_bias:
        kwargs["logit_bias"] = req.token_bias
    if prompt_logprobs is not None:
        kwargs["prompt_logprobs"] = prompt_logprobs
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "seed", "min_tokens", "ignore_eos", "speculation"):
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
    if logprobs is not None:
        kwargs["logprobs"] = logprobs
    elif req.num_logprobs is not None:
        kwargs["logprobs"] = req.num_logprobs
    if req.min_tokens is not None and req.min_tokens > max_tokens:
        raise bad_request(f"min_tokens ({req.min_tokens}) must not exceed max_tokens ({max_tokens})", "min_tokens")
    try:
        return SamplingParams(**kwargs)
    except (ValueError, TypeError) as exc:
        raise bad_request(f"invalid sampling parameters: {exc}") from None


def tenant_of(request: Request) -> str | None:
    """Who a request belongs to: a digest of the API key it presented (None without one).

    The engine keeps what it learns across requests (the suffix speculation's earlier outputs)
    per tenant, so one key's outputs never shape another key's drafts or timing.
    """
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:32]
