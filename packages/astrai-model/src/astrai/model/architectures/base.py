"""What one model family declares, and the llama-style defaults most families share.

A family maps its checkpoints onto `ModelConfig` and onto the internal tensor names (Hugging
Face's `model.layers.{i}....` names), says how llama.cpp stored its q/k rows, which decoder layer
it runs, and how to talk to it when a file carries no chat template. Loaders and the forward ask
the registry (`architectures/__init__.py`) instead of branching on architecture names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..layers import DecoderLayer
from ..rope import SUPPORTED_ROPE_TYPES, rope_type

# GGUF tensor name (per layer: after "blk.{i}.") -> internal name (after "model.layers.{i}.").
LLAMA_LAYER_TENSORS: Mapping[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_TENSORS: Mapping[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclass(frozen=True)
class GGUFMetadata:
    """A GGUF header as a family reads it: keys (errors name the file) and the tensors present."""

    values: Mapping[str, Any]
    source: str
    tensor_names: frozenset[str]  # internal names of the weight tensors in the file
    read_tensor: Callable[[str], torch.Tensor]  # a tensor by its GGUF name, as float32

    @property
    def architecture(self) -> str:
        return str(self.values["general.architecture"])

    def get(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}` (or a key starting with "general." / "tokenizer." as it is)."""
        full = key if key.startswith(("general.", "tokenizer.")) else f"{self.architecture}.{key}"
        return self.values.get(full, default)

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            full = key if key.startswith(("general.", "tokenizer.")) else f"{self.architecture}.{key}"
            raise ModelLoadError(self.source, f"metadata key {full!r} is missing")
        return value


class Architecture:
    """One model family. Subclass it, set the class attributes, override what differs."""

    name: ClassVar[str]  # ModelConfig.architecture
    gguf_names: ClassVar[tuple[str, ...]] = ()  # general.architecture values it reads
    hf_names: ClassVar[tuple[str, ...]] = ()  # config.json model_type / architectures entries
    layer_class: ClassVar[type[nn.Module]] = DecoderLayer
    gguf_layer_tensors: ClassVar[Mapping[str, str]] = LLAMA_LAYER_TENSORS
    gguf_config_tensors: ClassVar[tuple[str, ...]] = ()  # tensors read into the config, not weights
    # llama.cpp's converter interleaves each head's q/k rows (pairs (i, i + d/2) become neighbours)
    # for these families; the loader undoes it so the rotate-half RoPE applies.
    interleaved_qk_rows: ClassVar[bool] = False
    # A Jinja chat template for files that carry none (None: such files get no chat).
    turn_template: ClassVar[str | None] = None
    turn_format_name: ClassVar[str | None] = None  # how the log line names it
    stop_tokens: ClassVar[tuple[str, ...]] = ()  # generation also stops at these (by token text)

    def __repr__(self) -> str:
        return f"<architecture {self.name}>"

    # ---- checkpoints -> ModelConfig ----

    def config_from_gguf(self, meta: GGUFMetadata, name: str) -> ModelConfig:
        return ModelConfig(**self.gguf_fields(meta, name))

    def gguf_fields(self, meta: GGUFMetadata, name: str) -> dict[str, Any]:
        """The ModelConfig keyword arguments every llama-style GGUF spells the same way."""
        hidden = int(meta.require("embedding_length"))
        heads = int(meta.require("attention.head_count"))
        tokens = meta.get("tokenizer.ggml.tokens")
        scaling = None
        scaling_type = meta.get("rope.scaling.type")
        if scaling_type not in (None, "none"):
            if scaling_type != "linear":
                raise ModelLoadError(meta.source, f"unsupported rope scaling type {scaling_type!r}")
            scaling = {"rope_type": "linear", "factor": float(meta.require("rope.scaling.factor"))}
        eos, bos = meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.bos_token_id")
        names = meta.tensor_names
        return dict(
            name=name,
            architecture=self.name,
            vocab_size=int(meta.get("vocab_size", len(tokens) if tokens is not None else 0)),
            hidden_size=hidden,
            intermediate_size=int(meta.require("feed_forward_length")),
            num_layers=int(meta.require("block_count")),
            num_heads=heads,
            num_kv_heads=int(meta.get("attention.head_count_kv", heads)),
            head_dim=int(meta.get("attention.key_length", hidden // heads)),
            max_position_embeddings=int(meta.get("context_length", 2048)),
            rms_norm_eps=float(meta.get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(meta.get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            tie_word_embeddings="lm_head.weight" not in names,
            attention_bias="model.layers.0.self_attn.q_proj.bias" in names,
            qk_norm="model.layers.0.self_attn.q_norm.weight" in names,
            dtype="bfloat16",
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=[] if eos is None else [int(eos)],
        )

    def config_from_hf(self, raw: dict[str, Any], source: Any, name: str) -> ModelConfig:
        return ModelConfig(**self.hf_fields(raw, source, name))

    def hf_fields(self, raw: dict[str, Any], source: Any, name: str) -> dict[str, Any]:
        """The ModelConfig keyword arguments of a llama-style config.json (KeyError / ValueError
        propagate: the HF loader names the file)."""
        if raw.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(source, f"unsupported hidden_act {raw['hidden_act']!r} (only silu)")
        if raw.get("mlp_bias"):
            raise ModelLoadError(source, "mlp_bias=true is not supported")
        rope = dict(raw.get("rope_parameters") or {})
        scaling = raw.get("rope_scaling") or (rope if rope_type(rope) != "default" else None)
        if rope_type(scaling) not in SUPPORTED_ROPE_TYPES:
            raise ModelLoadError(source, f"unsupported rope scaling {rope_type(scaling)!r} "
                                         f"(supported: {SUPPORTED_ROPE_TYPES})")
        theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        eos = raw.get("eos_token_id")
        return dict(
            name=name,
            architecture=self.name,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=dict(scaling) if scaling else None,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", False)),
            qk_norm=False,
            dtype=hf_dtype_name(raw.get("dtype") or raw.get("torch_dtype")),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=[] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])],
        )

    def hf_tensor(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A safetensors tensor in this package's convention (Gemma: norm weights + 1)."""
        return tensor

    # ---- the forward ----

    def norm_names(self) -> tuple[str, ...]:
        """Checkpoint names of each layer's norms (attributes of its layer module)."""
        return self.layer_class.norm_names  # type: ignore[attr-defined]

    def build_layer(self, config: ModelConfig, index: int, dtype: torch.dtype, device: torch.device) -> nn.Module:
        return self.layer_class(config, dtype, device)

    def native_forward_blocker(self, config: ModelConfig) -> str | None:
        """Why the fused native forward cannot run this model (None: it can)."""
        if config.rope_freq_factors is not None:
            return "RoPE frequency factors (rope_freqs) are not in the native forward"
        if config.layer_types is not None and "sliding_attention" in config.layer_types:
            return "sliding-window layers are not in the native forward"
        return None


def hf_dtype_name(value: Any) -> str:
    """The checkpoint's dtype as a default; float16 runs as float32 (no fast fp16 on CPU)."""
    return "float32" if value in ("float32", "float16", "float64") else "bfloat16"
