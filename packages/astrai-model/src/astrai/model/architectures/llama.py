"""Llama (1-3.x, SmolLM2, ...) and Mistral: the plain pre-norm SwiGLU decoder.

llama.cpp stores their q/k rows interleaved per head. Llama 3.x GGUFs carry llama3 RoPE scaling
as a `rope_freqs.weight` tensor of per-pair frequency divisors (no rope.scaling keys), which
becomes `ModelConfig.rope_freq_factors`.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..errors import ModelLoadError
from .base import Architecture, GGUFMetadata

ROPE_FREQS = "rope_freqs.weight"


class Llama(Architecture):
    name = "llama"
    gguf_names = ("llama",)
    hf_names = ("llama", "LlamaForCausalLM")
    gguf_config_tensors = (ROPE_FREQS,)
    interleaved_qk_rows = True

    def config_from_gguf(self, meta: GGUFMetadata, name: str) -> ModelConfig:
        fields = self.gguf_fields(meta, name)
        if ROPE_FREQS in meta.tensor_names:
            factors = meta.read_tensor(ROPE_FREQS).flatten().tolist()
            if len(factors) != fields["head_dim"] // 2:
                raise ModelLoadError(meta.source, f"{ROPE_FREQS} has {len(factors)} values, "
                                                  f"expected head_dim / 2 = {fields['head_dim'] // 2}")
            fields["rope_freq_factors"] = factors
        return ModelConfig(**fields)


class Mistral(Llama):
    name = "mistral"
    gguf_names = ("mistral",)
    hf_names = ("mistral", "MistralForCausalLM")

    def hf_fields(self, raw: dict[str, Any], source: Any, name: str) -> dict[str, Any]:
        fields = super().hf_fields(raw, source, name)
        window = raw.get("sliding_window")
        if window:  # every layer windowed: cap the length rather than attend differently
            fields["max_position_embeddings"] = min(fields["max_position_embeddings"], int(window))
        return fields
