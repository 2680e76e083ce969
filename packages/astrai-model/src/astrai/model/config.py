"""Model hyper-parameters, presets, and exact parameter/KV arithmetic.

One dataclass describes every supported architecture (the families in `architectures/`): they
differ in a few switches (q/k/v bias, per-head q/k norm, explicit head_dim, RoPE scaling) and,
for Gemma 3, in the layer shape (four norms per layer, GeGLU, sliding-window layers with their
own RoPE base, a scaled embedding).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

ACTIVATIONS = ("silu", "gelu_tanh")
LAYER_TYPES = ("full_attention", "sliding_attention")
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, default: str | torch.dtype = "float32") -> torch.dtype:
    """A dtype name or alias (`DTYPES`, any case, optional "torch." prefix) or torch dtype -> torch dtype.

    None and "auto" mean `default`: the caller's policy (a checkpoint's own dtype for
    `load_model`, the engine's choice for `Engine.from_pretrained`).
    """
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        dtype = default
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}, 'auto' or a torch.dtype")
    return DTYPES[name]


@dataclass
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer (field names follow INTERFACES.md)."""

    name: str
    architecture: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 128
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    dtype: str = "bfloat16"
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    # Llama 3.x GGUFs: RoPE frequency divisors per rotated pair (the file's rope_freqs tensor).
    rope_freq_factors: list[float] | None = None
    # MLP gate activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU with tanh-approximate gelu).
    hidden_act: str = "silu"
    # Per-layer attention kind, "full_attention" | "sliding_attention" (None: all full).
    layer_types: list[str] | None = None
    # Keys a sliding-attention layer sees: its own position and the window - 1 before it.
    sliding_window: int | None = None
    # RoPE base of sliding-attention layers (Gemma 3's local layers: 10000); None: rope_theta.
    rope_local_theta: float | None = None
    # Token embeddings are multiplied by this (Gemma: sqrt(hidden_size)); the tied head is not.
    embedding_scale: float = 1.0
    # Gemma's layer: norms after attention and after the MLP too (4 per layer instead of 2).
    sandwich_norms: bool = False
    # Attention scores are scaled by query_pre_attn_scalar ** -0.5 (None: head_dim ** -0.5).
    query_pre_attn_scalar: float | None = None
    # logits = cap * tanh(logits / cap) when set.
    final_logit_softcapping: float | None = None

    def __post_init__(self) -> None:
        from .architectures import architecture_names  # the registry imports this module

        if self.architecture not in architecture_names():
            raise ValueError(f"unknown architecture {self.architecture!r}; supported: {', '.join(architecture_names())}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}; supported: {', '.join(ACTIVATIONS)}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= set(LAYER_TYPES):
                raise ValueError(f"layer_types must list one of {LAYER_TYPES} per layer ({self.num_layers})")
            if "sliding_attention" in self.layer_types and not self.sliding_window:
                raise ValueError("sliding_attention layers need a sliding_window")
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ValueError(f"rope_freq_factors needs head_dim / 2 = {self.head_dim // 2} values, "
                             f"got {len(self.rope_freq_factors)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        resolve_dtype(self.dtype)

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """A fresh copy of a named preset (see `PRESETS`)."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return dataclasses.replace(PRESETS[name], eos_token_ids=list(PRESETS[name].eos_token_ids))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_type(self, index: int) -> str:
        """"full_attention" or "sliding_attention" for layer `index`."""
        return "full_attention" if self.layer_types is None else self.layer_types[index]

    def layer_window(self, index: int) -> int | None:
        """The sliding window of layer `index` (None: it attends to the whole context)."""
        return self.sliding_window if self.layer_type(index) == "sliding_attention" else None

    @property
    def attention_scale(self) -> float:
        """The factor on q.k: query_pre_attn_scalar ** -0.5, by default head_dim ** -0.5."""
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def num_parameters(self) -> int:
        """Exact number of weights (tied embeddings counted once)."""
        h = self.hidden_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.attention_bias:
            attn += self.q_size + 2 * self.kv_size
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + (4 if self.sandwich_norms else 2) * h
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + self.num_layers * per_layer + h + head

    def kv_bytes_per_token(self, dtype: str | torch.dtype | None = None) -> int:
        """Bytes of K and V cache one token needs across all layers."""
        element = resolve_dtype(dtype, self.dtype).itemsize
        return 2 * self.num_layers * self.kv_size * element


PRESETS: dict[str, ModelConfig] = {
    "astrai-1b": ModelConfig(
        name="astrai-1b", architecture="llama", vocab_size=100_000, hidden_size=1536,
        intermediate_size=6912, num_layers=24, num_heads=24, num_kv_heads=4, head_dim=64,
        max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, dtype="bfloat16", bos_token_id=0, eos_token_ids=[1],
    ),
    "smollm2-135m-instruct": ModelConfig(
        name="smollm2-135m-instruct", architecture="llama", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
        tie_word_embeddings=True, dtype="bfloat16", bos_token_id=1, eos_token_ids=[2],
    ),
    "tiny-llama": ModelConfig(
        name="tiny-llama", architecture="llama", vocab_size=512, hidden_size=64,
        intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, dtype="float32", bos_token_id=1, eos_token_ids=[2],
    ),
    "tiny-qwen3": ModelConfig(
        name="tiny-qwen3", architecture="qwen3", vocab_size=512, hidden_size=64,
        intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
        tie_word_embeddings=True, qk_norm=True, dtype="float32", bos_token_id=1, eos_token_ids=[2],
    ),
    "tiny-gemma3": ModelConfig(
        name="tiny-gemma3", architecture="gemma3", vocab_size=512, hidden_size=64,
        intermediate_size=128, num_layers=3, num_heads=2, num_kv_heads=1, head_dim=32,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
        tie_word_embeddings=True, qk_norm=True, dtype="float32", bos_token_id=2, eos_token_ids=[1],
        hidden_act="gelu_tanh", layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=8, rope_local_theta=10_000.0, embedding_scale=8.0, sandwich_norms=True,
        query_pre_attn_scalar=32.0,
    ),
}
