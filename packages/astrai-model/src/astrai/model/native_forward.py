"""The fused native forward: one C++ call per step for a float32 model on the CPU.

`NativeForward.build(model)` collects the model's weights (packed low-bit or dense float32) into
the extension's `NativeDecoder` and returns None, changing nothing, where that cannot run: no
native kernels (no compiler / no AVX2), another device, a non-float32 model, or a layer kind
the native step does not know. The Python layers stay the reference path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .batch import ForwardBatch
from .kernels import native
from .quantized import QuantizedEmbedding, QuantizedLinear

if TYPE_CHECKING:
    from .transformer import Transformer

KVCache = tuple[torch.Tensor, torch.Tensor]


def _linear_weight(module: Any, native_module: Any, name: str) -> Any:
    if isinstance(module, QuantizedLinear):
        w = module.weight_packed
        return native_module.LinearWeight(int(w.qtype), w.out_features, w.in_features, packed=w.data,
                                          bias=module.bias)
    if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32:
        bias = None if module.bias is None else module.bias.detach().contiguous()
        weight = module.weight.detach().contiguous()
        return native_module.LinearWeight(0, weight.shape[0], weight.shape[1], dense=weight, bias=bias)
    raise TypeError(f"{name}: {type(module).__name__} is not served by the native forward")


def _table_weight(model: Transformer, native_module: Any) -> tuple[Any, Any]:
    """(embedding table, LM head) as native LinearWeights; one object when tied and packed."""
    embed = model.embed_tokens
    if isinstance(embed, QuantizedEmbedding):
        table = native_module.LinearWeight(int(embed.weight_packed.qtype), embed.num_embeddings,
                                           embed.embedding_dim, packed=embed.weight_packed.data)
    else:
        weight = embed.weight.detach().contiguous()
        if weight.dtype != torch.float32:
            raise TypeError("embedding is not float32")
        table = native_module.LinearWeight(0, weight.shape[0], weight.shape[1], dense=weight)
    if model.head_module is not None:  # packed head (shares the table's bytes when tied)
        return table, _linear_weight(model.head_module, native_module, "lm_head")
    if model.lm_head is None:
        return table, table  # tied dense: the lookup table is the head
    head = model.lm_head.detach().contiguous()
    if head.dtype != torch.float32:
        raise TypeError("lm_head is not float32")
    return table, native_module.LinearWeight(0, head.shape[0], head.shape[1], dense=head)


class NativeForward:
    """Holds the extension's decoder for one model; call it like Transformer.forward."""

    def __init__(self, model: Transformer, decoder: Any) -> None:
        self.model = model
        self.decoder = decoder

    @classmethod
    def build(cls, model: Transformer) -> NativeForward | None:
        if model.device.type != "cpu" or model.dtype != torch.float32 or model.packed:
            return None
        module = native()
        if module is None:
            return None
        config = model.config
        try:
            layers = []
            for i, layer in enumerate(model.layers):
                attn, mlp = layer.self_attn, layer.mlp
                norms = {}
                if attn.q_norm is not None:
                    norms = {"q_norm": attn.q_norm.weight.detach().float().contiguous(),
                             "k_norm": attn.k_norm.weight.detach().float().contiguous()}
                layers.append(module.DecoderLayerWeights(
                    layer.input_layernorm.weight.detach().float().contiguous(),
                    layer.post_attention_layernorm.weight.detach().float().contiguous(),  # the pre-MLP norm
                    _linear_weight(attn.qkv_proj, module, f"layer {i} qkv_proj"),
                    _linear_weight(attn.o_proj, module, f"layer {i} o_proj"),
                    _linear_weight(mlp.gate_up_proj, module, f"layer {i} gate_up_proj"),
                    _linear_weight(mlp.down_proj, module, f"layer {i} down_proj"),
                    **norms,
                ))
            table, head = _table_weight(model, module)
        except TypeError:
            return None
        shape = module.DecoderShape(config.hidden_size, config.intermediate_size, config.num_heads,
                                    config.num_kv_heads, config.head_dim, config.vocab_size, config.rms_norm_eps)
        decoder = module.NativeDecoder(shape, table, layers, model.norm.weight.detach().float().contiguous(), head)
        return cls(model, decoder)

    def __call__(self, batch: ForwardBatch, kv_caches: list[KVCache], page_size: int) -> torch.Tensor:
        max_position = int(batch.positions.max()) if batch.num_tokens else 0
        cos, sin = self.model.rotary.tables(max_position)
        return self.decoder.forward(
            batch.token_ids, batch.positions, batch.slot_mapping, batch.block_tables, batch.context_lens,
            batch.query_start_loc, batch.logits_indices, [k for k, _ in kv_caches], [v for _, v in kv_caches],
            cos, sin,
        )
