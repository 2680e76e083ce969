"""The decoder-only transformer and its ragged, paged forward step."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .architectures import architecture
from .batch import AttentionPlan, ForwardBatch
from .config import ModelConfig, resolve_dtype
from .cpu_packing import PackedLinear, pack_linear, packing_supported
from .kernels import dense, kernel_variant
from .layers import KVCache, RMSNorm
from .quantized import QuantizedEmbedding, QuantizedLinear
from .rope import RotaryTable

log = logging.getLogger("astrai.model")


class Transformer(nn.Module):
    """Decoder-only transformer over a paged KV cache; each family (`architectures/`) supplies
    its decoder layer, the rest (embedding, final norm, head, RoPE tables, plans) is shared."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        dtype = resolve_dtype(dtype, config.dtype)
        device = torch.device(device or "cpu")
        family = architecture(config.architecture)
        self.embed_tokens = nn.utils.skip_init(nn.Embedding, config.vocab_size, config.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(family.build_layer(config, i, dtype, device) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device,
                            scale_in_float32=config.sandwich_norms)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size, dtype=dtype, device=device))
        self.packed = False
        self.packed_head: PackedLinear | None = None
        self.head_module: nn.Module | None = None  # a packed low-bit LM head (QuantizedLinear)
        self.rotary = RotaryTable(config.head_dim, config.rope_theta, config.rope_scaling, device,
                                  config.rope_freq_factors)
        # RoPE table per layer type: sliding layers may rotate with their own base, unscaled.
        self.rotary_by_type = {"full_attention": self.rotary, "sliding_attention": self.rotary}
        if config.rope_local_theta is not None:
            self.rotary_by_type["sliding_attention"] = RotaryTable(config.head_dim, config.rope_local_theta, None, device)
        if init_weights:
            self.init_random_weights()

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype (also that of dense weights; packed low-bit layers compute in it)."""
        return self.norm.weight.dtype

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head

    @torch.no_grad()
    def init_random_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """Random weights (benchmarks, tests): normal(0, std) matrices, unit norms, zero biases."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, std, generator=generator)

    @torch.no_grad()
    def pack_for_cpu(self) -> bool:
        """Opt-in bf16 CPU speed-up: pack every projection and the LM head for oneDNN.

        Inference only: afterwards the packed weights are no longer parameters, so do this
        last (after loading, before serving). Returns False, changing nothing, where the CPU
        or torch build cannot do it.
        """
        if self.packed or not packing_supported(self.dtype, self.device):
            return False
        probe = pack_linear(self.head_weight, None)
        if probe is None:
            return False
        self.packed_head = probe
        for layer in self.layers:
            for parent, name in ((layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"),
                                 (layer.mlp, "gate_up_proj"), (layer.mlp, "down_proj")):
                linear = getattr(parent, name)
                packed = PackedLinear(linear.weight, linear.bias)
                setattr(parent, name, packed)
        self.packed = True
        return True

    @property
    def low_bit(self) -> bool:
        """Whether some weights are served packed in a GGUF block quantization."""
        return any(isinstance(m, (QuantizedLinear, QuantizedEmbedding)) for m in self.modules())

    def weight_format(self) -> str:
        """What the weights are held as, e.g. "Q4_1+Q8_0 (packed), float32" or "bfloat16 (oneDNN packed)"."""
        packed = sorted({q.name for m in self.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))
                         for q in m.qtypes})
        dense = str(self.dtype).removeprefix("torch.") + (" (oneDNN packed)" if self.packed else "")
        return f"{'+'.join(packed)} (packed), {dense}" if packed else dense

    @property
    def backend(self) -> str:
        """The Python layers ("torch"); `native_forward.NativeForward` is the fused alternative."""
        return "torch"

    @property
    def kernels(self) -> str:
        """The native kernel variant its packed linears and attention dispatch to, or "torch"."""
        if self.device.type != "cpu" or self.dtype != torch.float32:
            return "torch"
        return kernel_variant()

    @torch.no_grad()  # not inference_mode: callers may edit the returned logits in place
    def forward(self, batch: ForwardBatch, kv_caches: list[KVCache] | None, page_size: int) -> torch.Tensor:
        """One ragged step; writes new K/V into `kv_caches` and returns float32 logits [R, vocab]."""
        if kv_caches is not None and len(kv_caches) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} KV cache layers, got {len(kv_caches)}")
        config = self.config
        kinds = [config.layer_type(i) for i in range(config.num_layers)]
        windows = [config.layer_window(i) for i in range(config.num_layers)]
        plans = {w: AttentionPlan.build(batch, page_size, has_cache=kv_caches is not None, window=w)
                 for w in set(windows)}
        max_position = int(batch.positions.max()) if batch.num_tokens else 0
        rope = {kind: self.rotary_by_type[kind].lookup(batch.positions, max_position, self.dtype) for kind in set(kinds)}
        x = self.embed_tokens(batch.token_ids)
        if config.embedding_scale != 1.0:
            x = x * torch.tensor(config.embedding_scale, dtype=x.dtype)
        for i, layer in enumerate(self.layers):
            cos, sin = rope[kinds[i]]
            x = layer(x, cos, sin, None if kv_caches is None else kv_caches[i], plans[windows[i]])
        x = self.norm(x[batch.logits_indices])
        if self.head_module is not None:
            logits = self.head_module(x).float()
        elif self.packed_head is not None:
            logits = self.packed_head(x).float()
        else:
            logits = dense.linear(x, self.head_weight).float() if x.device.type == "cpu" else \
                torch.nn.functional.linear(x, self.head_weight).float()
        if config.final_logit_softcapping:
            cap = config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def logits(self, token_ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Logits [T, vocab] for every position of one whole sequence, without a KV cache."""
        ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        if not ids:
            raise ValueError("logits() needs at least one token")
        if max(ids) >= self.config.vocab_size or min(ids) < 0:
            raise ValueError(f"token id out of range [0, {self.config.vocab_size})")
        batch = ForwardBatch.build([ids], [0], None, 1, logits_indices=range(len(ids)), device=self.device)
        return self.forward(batch, None, page_size=1)
