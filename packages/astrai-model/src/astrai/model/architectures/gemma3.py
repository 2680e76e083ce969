"""Gemma 3 (text): sandwich-norm layers, GeGLU, QK-norm, interleaved local and global attention.

The per-layer math, in order (the reference for any other implementation of this family):

    x = embed(ids) * sqrt(hidden_size)                 # scale in the activation dtype
    for each layer:
        a = rms_norm(x, input_layernorm)
        q, k, v = split(a @ W_qkv)
        q = rms_norm(q, q_norm) per head; k = rms_norm(k, k_norm) per head   # head_dim wide
        q, k = rope(q, k, base)                        # rotate-half; base: rope_local_theta
                                                       # (10000) on sliding layers, rope_theta
                                                       # (1e6) on global ones
        o = softmax(q.k * query_pre_attn_scalar ** -0.5 + mask) v   # GQA; mask: causal, and on
                                                       # sliding layers only keys p - W < k <= p
        x = x + rms_norm(o @ W_o, post_attention_layernorm)
        m = rms_norm(x, pre_feedforward_layernorm)
        g, u = split(m @ W_gate_up)
        x = x + rms_norm((gelu_tanh(g) * u) @ W_down, post_feedforward_layernorm)
    logits = rms_norm(x, norm) @ embed.T               # tied head, unscaled table
    logits = cap * tanh(logits / cap) if final_logit_softcapping

Every rms_norm is x * rsqrt(mean(x^2) + eps) * w computed in float32, where w is the stored
multiplier: GGUF files hold Gemma's (1 + weight) already (llama.cpp's converter adds the 1),
safetensors hold `weight` and `hf_tensor` adds 1. Layer i is a sliding ("local") layer unless
(i + 1) % 6 == 0 (llama.cpp's default pattern; a `sliding_window_pattern` key overrides it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..batch import AttentionPlan
from ..config import ModelConfig
from ..errors import ModelLoadError
from ..layers import MLP, Attention, KVCache, RMSNorm
from .base import LLAMA_LAYER_TENSORS, Architecture, GGUFMetadata, hf_dtype_name

DEFAULT_SLIDING_PATTERN = 6
DEFAULT_LOCAL_ROPE_THETA = 10_000.0

# Gemma's turn format for files without a chat template: a system message is folded into the
# first user turn, the assistant is "model", and the generation prompt opens a model turn.
GEMMA_TURNS = (
    "{%- macro text(content) -%}"
    "{{ content if content is string else content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') }}"
    "{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_prefix = text(messages[0]['content']) ~ '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set first_prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{{ '<start_of_turn>' ~ ('model' if message['role'] == 'assistant' else message['role']) ~ '\\n' }}"
    "{{ ((first_prefix if loop.first else '') ~ text(message['content'])) | trim ~ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


class Gemma3DecoderLayer(nn.Module):
    """x + post_attn_norm(attn(input_norm(x))), then + post_ffw_norm(mlp(pre_ffw_norm(x)))."""

    norm_names = ("input_layernorm", "post_attention_layernorm",
                  "pre_feedforward_layernorm", "post_feedforward_layernorm")

    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(h, eps, dtype, device, scale_in_float32=True)
        self.self_attn = Attention(config, dtype, device, norm_scale_in_float32=True)
        self.post_attention_layernorm = RMSNorm(h, eps, dtype, device, scale_in_float32=True)
        self.pre_feedforward_layernorm = RMSNorm(h, eps, dtype, device, scale_in_float32=True)
        self.mlp = MLP(config, dtype, device)
        self.post_feedforward_layernorm = RMSNorm(h, eps, dtype, device, scale_in_float32=True)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: KVCache | None, plan: AttentionPlan
    ) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, plan))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3(Architecture):
    name = "gemma3"
    gguf_names = ("gemma3",)
    hf_names = ("gemma3_text", "Gemma3ForCausalLM")
    layer_class = Gemma3DecoderLayer
    gguf_layer_tensors = {
        **LLAMA_LAYER_TENSORS,
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    }
    turn_template = GEMMA_TURNS
    turn_format_name = "Gemma <start_of_turn>/<end_of_turn> turns"
    stop_tokens = ("<end_of_turn>",)

    def config_from_gguf(self, meta: GGUFMetadata, name: str) -> ModelConfig:
        fields = self.gguf_fields(meta, name)
        layers, hidden = fields["num_layers"], fields["hidden_size"]
        window = int(meta.get("attention.sliding_window", 0) or 0)
        layer_types = None
        if window > 0:
            layer_types = _sliding_pattern(meta.get("attention.sliding_window_pattern", DEFAULT_SLIDING_PATTERN),
                                           layers, meta.source)
        # llama.cpp: the 62-layer (27B) model scales by hidden / heads, every other by head_dim.
        scalar = hidden / fields["num_heads"] if layers == 62 else fields["head_dim"]
        cap = meta.get("final_logit_softcapping")
        if meta.get("attn_logit_softcapping"):
            raise ModelLoadError(meta.source, "attention logit softcapping is not supported")
        fields.update(
            rope_theta=float(meta.get("rope.freq_base", 1_000_000.0)),
            hidden_act="gelu_tanh",
            layer_types=layer_types,
            sliding_window=window or None,
            rope_local_theta=float(meta.get("rope.freq_base_swa", DEFAULT_LOCAL_ROPE_THETA)),
            embedding_scale=math.sqrt(hidden),
            sandwich_norms=True,
            qk_norm=True,
            query_pre_attn_scalar=float(scalar),
            final_logit_softcapping=float(cap) if cap else None,
        )
        return ModelConfig(**fields)

    def hf_fields(self, raw: dict[str, Any], source: Any, name: str) -> dict[str, Any]:
        act = raw.get("hidden_activation") or raw.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise ModelLoadError(source, f"unsupported hidden_activation {act!r} (only gelu_pytorch_tanh)")
        if raw.get("attn_logit_softcapping") or raw.get("use_bidirectional_attention"):
            raise ModelLoadError(source, "attention logit softcapping / bidirectional attention are not supported")
        rope = raw.get("rope_parameters") or {}
        full = rope.get("full_attention") or {}
        local = rope.get("sliding_attention") or {}
        if full.get("rope_type", "default") not in ("default", "linear") or local.get("rope_type", "default") != "default":
            raise ModelLoadError(source, f"unsupported rope parameters {rope!r}")
        scaling = raw.get("rope_scaling") or (full if full.get("rope_type") == "linear" else None)
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        layers = int(raw["num_hidden_layers"])
        layer_types = raw.get("layer_types") or [
            "sliding_attention" if (i + 1) % int(raw.get("sliding_window_pattern", DEFAULT_SLIDING_PATTERN))
            else "full_attention" for i in range(layers)]
        eos = raw.get("eos_token_id", 1)
        cap = raw.get("final_logit_softcapping")
        return dict(
            name=name,
            architecture=self.name,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or 256),
            max_position_embeddings=int(raw.get("max_position_embeddings", 131_072)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(full.get("rope_theta", raw.get("rope_theta", 1_000_000.0))),
            rope_scaling={"rope_type": "linear", "factor": float(scaling["factor"])} if scaling else None,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            attention_bias=bool(raw.get("attention_bias", False)),
            qk_norm=True,
            dtype=hf_dtype_name(raw.get("dtype") or raw.get("torch_dtype")),
            bos_token_id=raw.get("bos_token_id", 2),
            eos_token_ids=[int(e) for e in (eos if isinstance(eos, list) else [eos])],
            hidden_act="gelu_tanh",
            layer_types=list(layer_types),
            sliding_window=int(raw.get("sliding_window") or 4096),
            rope_local_theta=float(local.get("rope_theta", raw.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_THETA))),
            embedding_scale=math.sqrt(hidden),
            sandwich_norms=True,
            query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar", 256)),
            final_logit_softcapping=float(cap) if cap else None,
        )

    def hf_tensor(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.float() + 1.0 if name.endswith("norm.weight") else tensor

    def native_forward_blocker(self, config: ModelConfig) -> str | None:
        return "Gemma 3 layers (sandwich norms, GeGLU, sliding windows) are not in the native forward yet"


def _sliding_pattern(pattern: Any, layers: int, source: str) -> list[str]:
    """Per-layer kinds from `sliding_window_pattern`: a period n (layer i slides unless
    i % n == n - 1; n = 0: all slide) or one bool per layer (llama.cpp's two spellings)."""
    if isinstance(pattern, list):
        if len(pattern) != layers:
            raise ModelLoadError(source, f"sliding_window_pattern lists {len(pattern)} layers, the model has {layers}")
        return ["sliding_attention" if bool(p) else "full_attention" for p in pattern]
    period = int(pattern)
    return ["sliding_attention" if period == 0 or i % period < period - 1 else "full_attention"
            for i in range(layers)]
