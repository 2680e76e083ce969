"""Serving a GGUF in its own quantization: which projections stay packed, and installing them.

`native_type` is the one decision "packed or dequantized" (extend the packable set there and in
`kernels.quant.QuantType`). With `quantization="auto"` every projection whose GGUF tensors are in
a natively served type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q3_K, Q4_K, Q5_K, Q6_K; all parts of a
fused projection the same type, or all of Q4_0 / Q5_0 / Q8_0, which widen to Q8_0 exactly; other
mixes keep each part in its own type) is repacked once for the native kernels and installed as a
`QuantizedLinear`; the token table likewise as a `QuantizedEmbedding`, which
also serves a tied LM head from the same bytes. Everything else (norms, other block types) is
dequantized as before. Where packed weights cannot be served (no native kernels, a device other
than the CPU, activations other than float32) the whole model is dequantized and one log line
says why. `quantization="none"` always dequantizes.
"""

from __future__ import annotations

import logging

import gguf
import numpy as np
import torch

from .config import ModelConfig
from .gguf_loader import GGUFFile
from .kernels import native, native_unavailable_reason
from .kernels.quant import PackedWeight, QuantType, pack_gguf
from .kernels.widen import WIDENS_TO_Q8_0, widen_to_q8_0
from .quantized import QuantizedEmbedding, QuantizedLinear
from .transformer import Transformer

log = logging.getLogger("astrai.model")

QUANTIZATION_MODES = ("auto", "none")
FLOAT_TYPE_NAMES = ("F32", "F16", "BF16")


def native_type(type_ids: set[int], in_features: int) -> QuantType | None:
    """The one decision "served packed or dequantized": the QuantType a projection whose GGUF
    parts have these block types is packed in, or None (dequantized). Parts must agree, or all
    widen to Q8_0 exactly (a fused q/k/v of Q5_0 and Q8_0 parts is served as Q8_0)."""
    if len(type_ids) > 1:
        exact = {int(t) for t in WIDENS_TO_Q8_0}
        return QuantType.Q8_0 if type_ids <= exact and in_features % QuantType.Q8_0.block_weights == 0 else None
    if len(type_ids) != 1:
        return None
    (type_id,) = type_ids
    if type_id not in {int(t) for t in QuantType}:
        return None
    qtype = QuantType(type_id)
    return qtype if in_features % qtype.block_weights == 0 else None


def has_native_tensors(file: GGUFFile) -> bool:
    """Whether any weight of the file is in a block type the native low-bit kernels serve."""
    return any(native_type({t.type_id}, t.shape[-1]) is not None for t in file.tensors.values() if len(t.shape) == 2)


def dequantized_types(file: GGUFFile) -> list[str]:
    """Block types of the file's 2-D weights that no native kernel serves (they become floats)."""
    names = {gguf.GGMLQuantizationType(t.type_id).name for t in file.tensors.values()
             if len(t.shape) == 2 and native_type({t.type_id}, t.shape[-1]) is None}
    return sorted(names - set(FLOAT_TYPE_NAMES))


def check_mode(quantization: str) -> str:
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATION_MODES)}, got {quantization!r}")
    return quantization


def packed_serving_blocker(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why packed low-bit weights cannot be served with these settings (None: they can)."""
    if device.type != "cpu":
        return f"low-bit kernels run on the CPU only (device {device})"
    if dtype != torch.float32:
        return f"low-bit kernels take float32 activations (dtype {str(dtype).removeprefix('torch.')})"
    if native() is None:
        return f"native kernels unavailable: {native_unavailable_reason()}"
    return None


def _raw_rows(file: GGUFFile, name: str, config: ModelConfig) -> tuple[torch.Tensor, int]:
    """A tensor's GGUF blocks as uint8 rows [N, row_bytes] (q/k rows un-permuted) and its type id."""
    info = file.tensors[name]
    rows = info.shape[0] if len(info.shape) > 1 else 1
    raw = torch.from_numpy(np.array(file.container.raw(info)).reshape(rows, -1))
    return file.unpermute(name, raw, config), info.type_id


def _packed(file: GGUFFile, names: list[str], config: ModelConfig) -> list[PackedWeight] | None:
    """The fused weight of `names` as packed parts (one, or one per tensor where their block types
    differ and no one type holds them all exactly), or None where a part is dequantized."""
    in_features = file.tensors[names[0]].shape[-1]
    types = {file.tensors[n].type_id for n in names}
    fused = native_type(types, in_features)
    if fused is None:  # parts of different served types (Q4_K q/k with a Q6_K v): each as itself
        if len(names) == 1 or not all(native_type({t}, in_features) for t in types):
            return None
        return [part for name in names for part in _packed(file, [name], config) or ()]
    parts = []
    for name in names:
        rows, type_id = _raw_rows(file, name, config)
        parts.append(rows if type_id == fused else widen_to_q8_0(rows, QuantType(type_id)))
    raw = torch.cat(parts) if len(parts) > 1 else parts[0]
    return [pack_gguf(raw, fused, in_features)]


def _bias(file: GGUFFile, names: list[str], config: ModelConfig) -> torch.Tensor | None:
    if names[0] not in file.tensors:
        return None
    return torch.cat([file.tensor(n, config)[0].float() for n in names])


def install_packed_weights(model: Transformer, file: GGUFFile) -> int:
    """Replace every projection (and the token table) the GGUF holds in served types; returns how
    many. A fused projection whose parts mix block types keeps each part in its own type."""
    config = model.config
    installed = 0
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        attn, mlp = layer.self_attn, layer.mlp
        specs = [
            (attn, "qkv_proj", [p + f"self_attn.{x}_proj.weight" for x in "qkv"]),
            (attn, "o_proj", [p + "self_attn.o_proj.weight"]),
            (mlp, "gate_up_proj", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]),
            (mlp, "down_proj", [p + "mlp.down_proj.weight"]),
        ]
        for parent, attr, names in specs:
            packed = _packed(file, names, config)
            if packed is not None:
                bias = _bias(file, [n.replace(".weight", ".bias") for n in names], config)
                setattr(parent, attr, QuantizedLinear(packed, bias))
                installed += 1
    table = _packed(file, ["model.embed_tokens.weight"], config)
    if table is not None:
        (table_weight,) = table
        model.embed_tokens = QuantizedEmbedding(table_weight)
        installed += 1
        if config.tie_word_embeddings:
            model.head_module = QuantizedLinear(table_weight)
    if not config.tie_word_embeddings:
        head = _packed(file, ["lm_head.weight"], config)
        if head is not None:
            model.head_module = QuantizedLinear(head)
            model.lm_head = None
            installed += 1
    return installed
