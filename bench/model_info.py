"""The benchmarked model's shape: how many parameters it has, for the roofline."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelShape:
    """The numbers the roofline needs; taken from astrai.model when it is importable."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    source: str

    def num_parameters(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + head + self.num_layers * per_layer + h

    def kv_bytes_per_token(self, bytes_per_elem: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_elem


SMOLLM2_135M = ModelShape(
    name=MODEL_NAME, num_layers=30, hidden_size=576, num_heads=9, num_kv_heads=3, head_dim=64,
    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, source="bench constants",
)


def model_parameters(preset: str = MODEL_NAME) -> tuple[int, str]:
    """Exact parameter count: astrai.model's ModelConfig if available, else our own formula."""
    try:
        from astrai.model import ModelConfig

        return int(ModelConfig.preset(preset).num_parameters()), "astrai.model.ModelConfig"
    except Exception:  # the model package may not be built yet; the formula is exact for Llama
        if preset != MODEL_NAME:
            raise
        return SMOLLM2_135M.num_parameters(), SMOLLM2_135M.source
