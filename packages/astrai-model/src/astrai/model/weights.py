"""Copy checkpoint tensors (Hugging Face names) into a Transformer, checking every shape.

Both loaders (safetensors and GGUF) translate to HF names first, so this is the single place
that knows how checkpoint tensors map onto the fused q/k/v and gate/up parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .architectures import architecture
from .config import ModelConfig
from .errors import ModelLoadError
from .quantized import QuantizedEmbedding, QuantizedLinear
from .transformer import Transformer

# name -> (tensor, file it came from); the file is only used for error messages.
TensorGetter = Callable[[str], tuple[torch.Tensor, str]]
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor an HF checkpoint of this config must contain, with its shape."""
    h, q, kv, d = config.hidden_size, config.q_size, config.kv_size, config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config.vocab_size, h),
        "model.norm.weight": (h,),
    }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    norms = architecture(config.architecture).norm_names()
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes |= {p + f"{norm}.weight": (h,) for norm in norms}
        shapes |= {
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (config.intermediate_size, h),
            p + "mlp.up_proj.weight": (config.intermediate_size, h),
            p + "mlp.down_proj.weight": (h, config.intermediate_size),
        }
        if config.attention_bias:
            shapes |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,), p + "self_attn.v_proj.bias": (kv,)}
        if config.qk_norm:
            shapes |= {p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)}
    return shapes


def check_tensor_names(config: ModelConfig, available: set[str], source: str) -> None:
    """Fail on missing tensors and on unexpected ones (they mean a different architecture)."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - available)
    if missing:
        raise ModelLoadError(source, f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
    extra = sorted(
        n for n in available - set(expected)
        if not n.endswith(IGNORED_SUFFIXES) and not (n == "lm_head.weight" and config.tie_word_embeddings)
    )
    if extra:
        raise ModelLoadError(
            source, f"{len(extra)} unexpected tensor(s) for architecture {config.architecture!r}, e.g. {', '.join(extra[:3])}"
        )


@torch.no_grad()
def load_weights(model: Transformer, get: TensorGetter) -> None:
    """Fill every parameter of `model` from `get`, validating shapes as it goes."""
    config = model.config
    shapes = expected_shapes(config)

    def fetch(name: str) -> torch.Tensor:
        tensor, file = get(name)
        if tuple(tensor.shape) != shapes[name]:
            raise ModelLoadError(file, f"tensor {name} has shape {tuple(tensor.shape)}, expected {shapes[name]}")
        if not torch.is_floating_point(tensor):
            raise ModelLoadError(file, f"tensor {name} has non-float dtype {tensor.dtype}")
        return tensor

    def put(param: torch.Tensor | None, *names: str) -> None:
        # Copy each part straight into its rows of the (possibly fused) parameter: no concat buffer.
        if param is None:  # a module already installed with packed low-bit weights
            return
        row = 0
        for name in names:
            part = fetch(name)
            param[row : row + part.shape[0]].copy_(part)
            row += part.shape[0]

    put(_dense(model.embed_tokens), "model.embed_tokens.weight")
    put(model.norm.weight, "model.norm.weight")
    if model.lm_head is not None:
        put(model.lm_head, "lm_head.weight")
    norms = architecture(config.architecture).norm_names()
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        attn = layer.self_attn
        for norm in norms:
            put(getattr(layer, norm).weight, p + f"{norm}.weight")
        put(_dense(attn.qkv_proj), *(p + f"self_attn.{x}_proj.weight" for x in "qkv"))
        if _dense(attn.qkv_proj) is not None and attn.qkv_proj.bias is not None:
            put(attn.qkv_proj.bias, *(p + f"self_attn.{x}_proj.bias" for x in "qkv"))
        put(_dense(attn.o_proj), p + "self_attn.o_proj.weight")
        if attn.q_norm is not None:
            put(attn.q_norm.weight, p + "self_attn.q_norm.weight")
            put(attn.k_norm.weight, p + "self_attn.k_norm.weight")
        put(_dense(layer.mlp.gate_up_proj), p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
        put(_dense(layer.mlp.down_proj), p + "mlp.down_proj.weight")


def _dense(module: torch.nn.Module) -> torch.Tensor | None:
    """The module's dense weight to fill, or None if it holds packed low-bit weights already."""
    return None if isinstance(module, (QuantizedLinear, QuantizedEmbedding)) else module.weight
