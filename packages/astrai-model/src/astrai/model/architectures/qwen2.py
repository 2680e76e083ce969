"""Qwen2 / Qwen2.5: llama's layer with q/k/v biases; q/k rows stay in rotate-half order."""

from __future__ import annotations

from typing import Any

from .base import Architecture


class Qwen2(Architecture):
    name = "qwen2"
    gguf_names = ("qwen2",)
    hf_names = ("qwen2", "Qwen2ForCausalLM")

    def hf_fields(self, raw: dict[str, Any], source: Any, name: str) -> dict[str, Any]:
        fields = super().hf_fields(raw, source, name)
        fields["attention_bias"] = True
        window = raw.get("sliding_window")
        if raw.get("use_sliding_window", False) and window:
            fields["max_position_embeddings"] = min(fields["max_position_embeddings"], int(window))
        return fields
