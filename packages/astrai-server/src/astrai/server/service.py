"""Per-app state shared by the endpoints: config, engine holder, admission, metrics, logging."""

from __future__ import annotations

import time
from typing import Any

from astrai.scheduler import EngineClient
from astrai.server.config import ServerConfig
from astrai.server.errors import APIError, bad_request
from astrai.server.generation import InFlight
from astrai.server.metrics import ServerMetrics
from astrai.server.state import Admission, EngineHolder
from astrai.server.tools import prepare_messages
from starlette.requests import Request


class Service:
    """Everything a request handler needs besides the request itself."""

    def __init__(self, config: ServerConfig, holder: EngineHolder) -> None:
        self.config = config
        self.holder = holder
        self.admission = Admission(lambda: config.max_outstanding(holder.get().max_num_seqs))
        self.metrics = ServerMetrics(holder.peek, config.model_name)
        self.in_flight = InFlight(self.admission)
        self.started = int(time.time())  # `created` of the model cards

    def abort_all(self) -> int:
        """Abort every generation in flight (shutdown grace period over); each ends with a clean error."""
        return self.in_flight.abort_all()

    def engine(self) -> EngineClient:
        return self.holder.get()

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.config.model_name:
            raise APIError(404, f"The model `{model}` does not exist. This server serves "
                                f"`{self.config.model_name}`.", param="model", code="model_not_found")

    def fit_context(self, engine: EngineClient, prompts: list[list[int]], requested: int | None, param: str) -> int:
        """Check every prompt against the context and return max_tokens (the room left if not given)."""
        limit = engine.max_model_len  # the engine's own cap: model length and KV pool
        longest = 0
        for ids in prompts:
            if not ids:
                raise bad_request("The prompt is empty", param)
            n = len(ids)
            longest = max(longest, n)
            if n >= limit:
                raise bad_request(f"This model's maximum context length is {limit} tokens. However, your prompt "
                                  f"has {n} tokens, which leaves no room for the completion. Please reduce the "
                                  "length of the prompt.", param, code="context_length_exceeded")
            if requested is not None and n + requested > limit:
                raise bad_request(f"This model's maximum context length is {limit} tokens. However, you requested "
                                  f"{n + requested} tokens ({n} in the prompt, {requested} for the completion). "
                                  "Please reduce the length of the prompt or of max_tokens.", "max_tokens",
                                  code="context_length_exceeded")
        return requested if requested is not None else limit - longest

    @staticmethod
    def render_chat(engine: EngineClient, messages: list[dict[str, Any]], functions: list[dict[str, Any]] | None = None,
                    param: str = "messages") -> list[int]:
        """Apply the chat template; tools (and earlier calls and results) as `tools.prepare_messages` says."""
        tokenizer = engine.tokenizer
        messages, extra = prepare_messages(messages, functions or [], tokenizer.chat_template)
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **extra)
        except Exception as exc:  # a template may reject a conversation shape (jinja raises)
            raise bad_request(f"{param}: the chat template rejected these messages: {exc}", param) from None
        return list(ids)

    @staticmethod
    def encode_prompts(engine: EngineClient, prompts: list[str | list[int]]) -> list[list[int]]:
        vocab = int(engine.config.vocab_size)
        out = []
        for prompt in prompts:
            if isinstance(prompt, str):
                out.append(list(engine.tokenizer.encode(prompt, add_special_tokens=True)))  # as the engine does
                continue
            bad = next((t for t in prompt if not 0 <= t < vocab), None)
            if bad is not None:
                raise bad_request(f"prompt: token id {bad} is out of range [0, {vocab})", "prompt")
            out.append(list(prompt))
        return out

    @staticmethod
    def decode(engine: EngineClient, ids: list[int]) -> str:
        return engine.tokenizer.decode(ids, skip_special_tokens=False)

    @staticmethod
    def log_info(request: Request) -> dict:
        return request.scope.setdefault("state", {}).setdefault("log", {})

    def log_prompt(self, request: Request, prompt: Any) -> None:
        if self.config.log_prompts:
            self.log_info(request)["prompt"] = repr(prompt)[:2000]
