"""The fused native forward: a `ForwardModel` that runs each step as one C++ call.

`NativeForward.build(model)` collects a float32 CPU `Transformer`'s weights (packed low-bit or
dense float32) into the extension's `NativeDecoder` and returns None, changing nothing and
saying why in one log line, where that cannot run: no native kernels (no compiler, no supported
CPU), another device or dtype, a family whose layers the native step does not know. The
Transformer stays the reference path (and serves forwards without a KV cache).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .architectures import architecture
from .batch import ForwardBatch
from .config import ModelConfig
from .kernels import kernels
from .quantized import QuantizedEmbedding, QuantizedLinear

if TYPE_CHECKING:
    from .transformer import Transformer

log = logging.getLogger("astrai.model")

KVCache = tuple[torch.Tensor, torch.Tensor]


class NotNative(Exception):
    """The model has a part the native forward does not serve (the message says which)."""


def _linear_weight(module: nn.Module, native: Any, name: str) -> Any:
    if isinstance(module, QuantizedLinear):
        parts = [native.LinearWeight(int(w.qtype), w.out_features, w.in_features, packed=w.data, bias=bias)
                 for w, bias in zip(module.parts, module.part_biases(), strict=True)]
        if len(parts) == 1:
            return parts[0]
        return native.LinearWeight(0, module.out_features, module.in_features, parts=parts)
    if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32:
        bias = None if module.bias is None else module.bias.detach().contiguous()
        weight = module.weight.detach().contiguous()
        return native.LinearWeight(0, weight.shape[0], weight.shape[1], dense=weight, bias=bias)
    raise NotNative(f"{name}: {type(module).__name__} is not served by the native forward")


def _table_weight(model: Transformer, native: Any) -> tuple[Any, Any]:
    """(embedding table, LM head) as native LinearWeights; one object when tied and packed."""
    embed = model.embed_tokens
    if isinstance(embed, QuantizedEmbedding):
        table = native.LinearWeight(int(embed.weight_packed.qtype), embed.num_embeddings, embed.embedding_dim,
                                    packed=embed.weight_packed.data)
    else:
        weight = embed.weight.detach().contiguous()
        if weight.dtype != torch.float32:
            raise NotNative("the embedding is not float32")
        table = native.LinearWeight(0, weight.shape[0], weight.shape[1], dense=weight)
    if model.head_module is not None:  # packed head (shares the table's bytes when tied)
        return table, _linear_weight(model.head_module, native, "lm_head")
    if model.lm_head is None:
        return table, table  # tied dense: the lookup table is the head
    head = model.lm_head.detach().contiguous()
    if head.dtype != torch.float32:
        raise NotNative("the LM head is not float32")
    return table, native.LinearWeight(0, head.shape[0], head.shape[1], dense=head)


def _norm(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().float().contiguous()


def _layer_weights(model: Transformer, index: int, native: Any) -> Any:
    """One decoder layer: llama-style pre-norm (two norms) or gemma3's sandwich (four)."""
    config, layer = model.config, model.layers[index]
    attn, mlp = layer.self_attn, layer.mlp
    extra: dict[str, Any] = {}
    if attn.q_norm is not None:
        extra.update(q_norm=_norm(attn.q_norm), k_norm=_norm(attn.k_norm))
    if config.sandwich_norms:  # pre-MLP norm is pre_feedforward_layernorm; the outputs get their own
        mlp_norm = _norm(layer.pre_feedforward_layernorm)
        extra.update(attn_out_norm=_norm(layer.post_attention_layernorm),
                     mlp_out_norm=_norm(layer.post_feedforward_layernorm))
    else:
        mlp_norm = _norm(layer.post_attention_layernorm)
    window = config.layer_window(index) or 0
    local = config.layer_type(index) == "sliding_attention" and config.rope_local_theta is not None
    return native.DecoderLayerWeights(
        _norm(layer.input_layernorm), mlp_norm,
        _linear_weight(attn.qkv_proj, native, f"layer {index} qkv_proj"),
        _linear_weight(attn.o_proj, native, f"layer {index} o_proj"),
        _linear_weight(mlp.gate_up_proj, native, f"layer {index} gate_up_proj"),
        _linear_weight(mlp.down_proj, native, f"layer {index} down_proj"),
        window=window, rope=1 if local else 0, **extra,
    )


class NativeForward:
    """A `ForwardModel` over a loaded float32 CPU Transformer: each paged step is one native call."""

    backend = "native"

    def __init__(self, model: Transformer, decoder: Any, variant: str) -> None:
        self.model = model
        self.decoder = decoder
        self.variant = variant
        self.config: ModelConfig = model.config
        self._local = model.rotary_by_type["sliding_attention"] if model.config.rope_local_theta is not None else None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def low_bit(self) -> bool:
        return self.model.low_bit

    @property
    def kernels(self) -> str:
        return self.variant

    def weight_format(self) -> str:
        return self.model.weight_format()

    @classmethod
    def build(cls, model: Transformer) -> NativeForward | None:
        """The native forward of `model`, or None (one log line says why) where it cannot run."""
        try:
            return cls._build(model)
        except NotNative as exc:
            log.info("%s runs the torch forward: %s", model.config.name, exc)
            return None

    @classmethod
    def _build(cls, model: Transformer) -> NativeForward:
        config = model.config
        if model.device.type != "cpu" or model.dtype != torch.float32 or model.packed:
            raise NotNative(f"the native forward runs float32 weights on the CPU (this model: {model.dtype} on "
                            f"{model.device}{', oneDNN-packed' if model.packed else ''})")
        blocker = architecture(config.architecture).native_forward_blocker(config)
        if blocker is not None:
            raise NotNative(blocker)
        chosen = kernels()
        if chosen is None:
            raise NotNative("native kernels unavailable")
        native = chosen.module
        layers = [_layer_weights(model, i, native) for i in range(config.num_layers)]
        table, head = _table_weight(model, native)
        shape = native.DecoderShape(
            config.hidden_size, config.intermediate_size, config.num_heads, config.num_kv_heads, config.head_dim,
            config.vocab_size, config.rms_norm_eps, attention_scale=config.attention_scale,
            embedding_scale=config.embedding_scale, activation=config.hidden_act,
        )
        decoder = native.NativeDecoder(shape, table, layers, _norm(model.norm), head)
        return cls(model, decoder, chosen.variant)

    def forward(self, batch: ForwardBatch, kv_caches: list[KVCache] | None, page_size: int) -> torch.Tensor:
        """One ragged step (INTERFACES.md); without KV caches, the Transformer's own forward."""
        if kv_caches is None or not batch.num_tokens:
            return self.model.forward(batch, kv_caches, page_size)
        if len(kv_caches) != self.config.num_layers:
            raise ValueError(f"expected {self.config.num_layers} KV cache layers, got {len(kv_caches)}")
        max_position = int(batch.positions.max())
        cos, sin = self.model.rotary.tables(max_position)
        local_cos = local_sin = None
        if self._local is not None:
            local_cos, local_sin = self._local.tables(max_position)
        return self.decoder.forward(
            batch.token_ids, batch.positions, batch.slot_mapping, batch.block_tables, batch.context_lens,
            batch.query_start_loc, batch.logits_indices, [k for k, _ in kv_caches], [v for _, v in kv_caches],
            cos, sin, local_cos, local_sin,
        )

    __call__ = forward

    def logits(self, token_ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Logits [T, vocab] of one whole sequence without a KV cache (the Transformer's)."""
        return self.model.logits(token_ids)
