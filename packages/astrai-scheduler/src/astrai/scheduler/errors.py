"""Errors the Engine raises to callers."""

from __future__ import annotations


class EngineError(RuntimeError):
    """The engine cannot serve a request (shut down, or an internal failure)."""


class FieldError(ValueError):
    """A request's value is invalid, and `field` names which (OpenAI's `param`: "logit_bias", "tools.0.type").

    Raised where the value is checked, so a front end reports the field without reading the text;
    `str()` is "<field>: <detail>".
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


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
