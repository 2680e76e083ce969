"""Qwen3: llama's layer with a per-head RMSNorm on q and k before RoPE, explicit head_dim."""

from __future__ import annotations

from typing import Any

from .base import Architecture


class Qwen3(Architecture):
    name = "qwen3"
    gguf_names = ("qwen3",)
    hf_names = ("qwen3", "Qwen3ForCausalLM")

    def hf_fields(self, raw: dict[str, Any], source: Any, name: str) -> dict[str, Any]:
        fields = super().hf_fields(raw, source, name)
        fields["qk_norm"] = True
        window = raw.get("sliding_window")
        if raw.get("use_sliding_window", False) and window:
            fields["max_position_embeddings"] = min(fields["max_position_embeddings"], int(window))
        return fields
