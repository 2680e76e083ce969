"""Errors the Engine raises to callers."""

from __future__ import annotations


class EngineError(RuntimeError):
    """The engine cannot serve a request (shut down, or an internal failure)."""


class PromptTooLongError(ValueError):
    """A prompt does not fit the context window; the message states both numbers."""

    def __init__(self, prompt_len: int, max_model_len: int, detail: str = "") -> None:
        self.prompt_len = prompt_len
        self.max_model_len = max_model_len
        msg = (
            f"prompt has {prompt_len} tokens but the engine's max_model_len is {max_model_len} "
            f"(prompt plus at least one generated token must fit)"
        )
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
