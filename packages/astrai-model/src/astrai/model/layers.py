"""Building blocks: RMSNorm, paged GQA attention, gated MLP, the llama-style decoder layer.

Projections are fused (q/k/v in one matmul, gate/up in one) to halve per-layer kernel calls;
the loaders concatenate checkpoint weights to match. Families with another layer shape build
their own layer from these blocks (`architectures/`); every layer has the same call signature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batch import AttentionPlan, PrefillSeq
from .config import ModelConfig
from .rope import apply_rotary

KVCache = tuple[torch.Tensor, torch.Tensor]


def _linear(in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device: torch.device) -> nn.Linear:
    # skip_init: weights are loaded or initialised by the Transformer, never twice.
    return nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias, dtype=dtype, device=device)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, as the reference models do.

    Llama multiplies by the weight after casting back to the activation dtype; Gemma multiplies
    in float32 and then casts (`scale_in_float32`). The weight is always the multiplier itself
    (Gemma checkpoints store it minus 1; the HF loader adds the 1, GGUF files already did).
    """

    def __init__(
        self, size: int, eps: float, dtype: torch.dtype, device: torch.device, *, scale_in_float32: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype, device=device))
        self.eps = eps
        self.scale_in_float32 = scale_in_float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.scale_in_float32:
            return (x * self.weight.float()).to(dtype)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    """GQA self-attention over the paged KV cache.

    Which keys a query sees (causal, or a sliding window) is the plan's business; the scores
    are scaled by `config.attention_scale` (head_dim ** -0.5 unless the family says otherwise).
    """

    def __init__(
        self, config: ModelConfig, dtype: torch.dtype, device: torch.device, *, norm_scale_in_float32: bool = False
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_size, self.kv_size = config.q_size, config.kv_size
        self.scale = None if config.query_pre_attn_scalar is None else config.attention_scale  # None: SDPA's own
        self.qkv_proj = _linear(config.hidden_size, self.q_size + 2 * self.kv_size, config.attention_bias, dtype, device)
        self.o_proj = _linear(self.q_size, config.hidden_size, False, dtype, device)
        self.q_norm = self.k_norm = None
        if config.qk_norm:
            eps = config.rms_norm_eps
            self.q_norm = RMSNorm(self.head_dim, eps, dtype, device, scale_in_float32=norm_scale_in_float32)
            self.k_norm = RMSNorm(self.head_dim, eps, dtype, device, scale_in_float32=norm_scale_in_float32)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: KVCache | None,
        plan: AttentionPlan,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        qkv = self.qkv_proj(x)
        # q and k are adjacent in the fused output: rotate them as one [T, heads + kv_heads, d] view.
        qk = qkv[:, : self.q_size + self.kv_size].view(tokens, self.num_heads + self.num_kv_heads, self.head_dim)
        v = qkv[:, self.q_size + self.kv_size :].view(tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=1)
        q, k = apply_rotary(qk, cos, sin).split([self.num_heads, self.num_kv_heads], dim=1)

        k_flat = v_flat = None
        if kv_cache is not None:
            k_flat = kv_cache[0].view(-1, self.num_kv_heads, self.head_dim)
            v_flat = kv_cache[1].view(-1, self.num_kv_heads, self.head_dim)
            if plan.write_slots is not None:
                k_new, v_new = (k, v) if plan.write_rows is None else (k[plan.write_rows], v[plan.write_rows])
                k_flat.index_copy_(0, plan.write_slots, k_new.to(k_flat.dtype))
                v_flat.index_copy_(0, plan.write_slots, v_new.to(v_flat.dtype))

        if plan.decode_all_rows:
            out = self._decode(q, k_flat, v_flat, plan)
        else:
            out = torch.empty_like(q)
            if plan.decode_rows is not None:
                out[plan.decode_rows] = self._decode(q[plan.decode_rows], k_flat, v_flat, plan)
            for seq in plan.prefills:
                out[seq.start : seq.end] = self._prefill(q, k, v, k_flat, v_flat, seq)
        return self.o_proj(out.view(tokens, self.q_size))

    def _decode(self, q: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        """All single-token rows at once: [Bd, heads, 1, d] against their padded contexts."""
        batch, length = plan.decode_gather.shape
        slots = plan.decode_gather.view(-1)
        keys = k_flat.index_select(0, slots).view(batch, length, self.num_kv_heads, self.head_dim)
        values = v_flat.index_select(0, slots).view(batch, length, self.num_kv_heads, self.head_dim)
        if plan.decode_mask is not None:  # padding slots may hold never-written memory: zero them
            padding = ~plan.decode_mask[:, 0, 0, :, None, None]
            keys, values = keys.masked_fill(padding, 0.0), values.masked_fill(padding, 0.0)
        keys, values = keys.to(q.dtype).transpose(1, 2), values.to(q.dtype).transpose(1, 2)  # [Bd, kvh, L, d]
        out = F.scaled_dot_product_attention(
            q[:, :, None, :], keys, values, attn_mask=plan.decode_mask, enable_gqa=True, scale=self.scale
        )
        return out[:, :, 0, :]

    def _prefill(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_flat: torch.Tensor | None,
        v_flat: torch.Tensor | None,
        seq: PrefillSeq,
    ) -> torch.Tensor:
        """One chunk, causal (and windowed if the plan says so); over fresh K/V if it has no
        cached prefix, else over the cache."""
        query = q[seq.start : seq.end].transpose(0, 1)[None]
        if seq.gather is None:
            keys = k[seq.start : seq.end].transpose(0, 1)[None]
            values = v[seq.start : seq.end].transpose(0, 1)[None]
        else:
            keys = k_flat.index_select(0, seq.gather).to(q.dtype).transpose(0, 1)[None]
            values = v_flat.index_select(0, seq.gather).to(q.dtype).transpose(0, 1)[None]
        if seq.mask is None:
            out = F.scaled_dot_product_attention(query, keys, values, is_causal=True, enable_gqa=True, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=seq.mask, enable_gqa=True,
                                                 scale=self.scale)
        return out[0].transpose(0, 1)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """gelu with the tanh approximation (transformers' "gelu_pytorch_tanh", ggml's gelu)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"silu": F.silu, "gelu_tanh": gelu_tanh}


class MLP(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)); SwiGLU (silu) or GeGLU (gelu_tanh)."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.act = ACTIVATIONS[config.hidden_act]
        self.gate_up_proj = _linear(config.hidden_size, 2 * config.intermediate_size, False, dtype, device)
        self.down_proj = _linear(config.intermediate_size, config.hidden_size, False, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm block (llama, mistral, qwen2, qwen3): x + attn(norm(x)), then + mlp(norm(x))."""

    norm_names = ("input_layernorm", "post_attention_layernorm")  # checkpoint names of its norms

    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.self_attn = Attention(config, dtype, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.mlp = MLP(config, dtype, device)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: KVCache | None, plan: AttentionPlan
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, plan)
        return x + self.mlp(self.post_attention_layernorm(x))
