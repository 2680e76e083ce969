"""Chat templates rendered with jinja2 the way Hugging Face renders them.

Same environment settings (sandboxed, trim_blocks, lstrip_blocks, loop controls) and the same
globals (raise_exception, strftime_now, a tojson that keeps non-ASCII text), so a template from
tokenizer_config.json or GGUF metadata produces byte-identical prompts.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The template rejected the conversation (raise_exception) or failed to render."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool,
    special_tokens: dict[str, str | None],
    **extra: Any,
) -> str:
    """Render `messages` with the template; errors become ChatTemplateError."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ChatTemplateError("messages must be a list of dicts with 'role' and 'content'")
    try:
        compiled = compile_template(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template does not compile: {exc}") from exc
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens, **extra)
    except ChatTemplateError:
        raise
    except Exception as exc:  # jinja errors, and TypeError from e.g. `'x' + None` on a malformed message
        raise ChatTemplateError(f"chat template failed to render: {type(exc).__name__}: {exc}") from exc
