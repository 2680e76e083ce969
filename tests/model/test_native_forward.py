"""The fused native forward equals the Python layers on the same weights, for every layer kind.

Both paths run the same model over the same ragged paged batches (decode rows, a chunk after a
cached prefix, a fresh prefill): dense float32 weights (llama with GQA, qwen2-style q/k/v bias,
qwen3's q/k norm with a tied head) and packed low-bit weights (Q4_0, Q4_1, Q8_0, built with the
`gguf` package's own quantizer). Where the native kernels cannot be built the test fails: on a
machine with a compiler and AVX2 they must be there.
"""

from __future__ import annotations

import dataclasses
import shutil

import gguf
import numpy as np
import pytest
import torch
from astrai.model import ForwardBatch, ModelConfig, NativeForward, Transformer
from astrai.model.kernels import kernels as native_kernels_in_use
from astrai.model.kernels import native, native_unavailable_reason
from astrai.model.kernels.quant import QuantType, dequantize, pack_gguf
from astrai.model.quantized import QuantizedEmbedding, QuantizedLinear, embedding_rows

PAGE = 8


def require_native():
    module = native()
    if module is None:
        if shutil.which("g++") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            pytest.fail(f"native kernels must build on this machine: {native_unavailable_reason()}")
        pytest.skip(f"no native kernels here: {native_unavailable_reason()}")
    return module


def tiny(kind: str) -> ModelConfig:
    base = ModelConfig.preset("tiny-llama")
    if kind == "llama":
        return dataclasses.replace(base, head_dim=16, num_heads=6, num_kv_heads=2, hidden_size=64)
    if kind == "qwen2":
        return dataclasses.replace(base, architecture="qwen2", attention_bias=True)
    if kind == "qwen3":
        return ModelConfig.preset("tiny-qwen3")
    if kind == "gemma3":  # sandwich norms, GeGLU, sliding window 8 on two of three layers, local RoPE base
        return ModelConfig.preset("tiny-gemma3")
    raise ValueError(kind)


def random_model(config: ModelConfig, seed: int = 0) -> Transformer:
    model = Transformer(config, dtype=torch.float32, init_weights=False).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.1 * noise)
    return model


# "mixed": each fused projection's parts in different block types that no one type holds exactly
# (as a Q4_K_M file's Q4_K q/k with a Q6_K v), served as packed parts.
MIXED_PARTS = (QuantType.Q4_1, QuantType.Q8_0, QuantType.Q4_0)


def quantize_linears(model: Transformer, qtype: QuantType | None) -> None:
    """Replace every projection and the table by packed weights quantized with `gguf` (qtype None:
    the fused q/k/v and gate/up projections split into parts of MIXED_PARTS' types)."""

    def packed(weight: torch.Tensor, kind: QuantType):
        raw = gguf.quants.quantize(weight.detach().numpy().astype(np.float32), gguf.GGMLQuantizationType(int(kind)))
        return pack_gguf(torch.from_numpy(np.ascontiguousarray(raw)), kind, weight.shape[1])

    c = model.config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    for layer in model.layers:
        for parent, attr, sizes in ((layer.self_attn, "qkv_proj", [q, kv, kv]), (layer.self_attn, "o_proj", None),
                                    (layer.mlp, "gate_up_proj", [c.intermediate_size] * 2),
                                    (layer.mlp, "down_proj", None)):
            linear = getattr(parent, attr)
            if qtype is None and sizes is not None:
                parts = [packed(w, kind) for w, kind in zip(linear.weight.split(sizes), MIXED_PARTS, strict=False)]
                setattr(parent, attr, QuantizedLinear(parts, linear.bias))
            else:
                setattr(parent, attr, QuantizedLinear(packed(linear.weight, qtype or QuantType.Q4_1), linear.bias))
    kind = qtype or QuantType.Q8_0
    table = packed(model.embed_tokens.weight, kind)
    tied = model.lm_head is None
    model.embed_tokens = QuantizedEmbedding(table)
    model.head_module = QuantizedLinear(table if tied else packed(model.lm_head, kind))
    model.lm_head = None


def ragged_batch(config: ModelConfig, kv_dtype: torch.dtype):
    """Three sequences in one step: a decode row at 21, a 5-token chunk after 11 cached, a fresh 9."""
    generator = torch.Generator().manual_seed(1)
    pages = torch.randperm(40, generator=generator).tolist()
    tables = [pages[0:3], pages[3:6], pages[6:8]]
    lengths = [(20, 1), (11, 5), (0, 9)]  # (cached prefix, new tokens)
    histories = [torch.randint(0, config.vocab_size, (start + n,), generator=generator).tolist()
                 for start, n in lengths]
    kv = [(torch.zeros(40, PAGE, config.num_kv_heads, config.head_dim, dtype=kv_dtype),
           torch.zeros(40, PAGE, config.num_kv_heads, config.head_dim, dtype=kv_dtype))
          for _ in range(config.num_layers)]
    prefix = ForwardBatch.build([h[:s] for h, (s, _) in zip(histories, lengths, strict=True) if s],
                                [0, 0], [t for t, (s, _) in zip(tables, lengths, strict=True) if s], PAGE)
    step = ForwardBatch.build([h[s:] for h, (s, _) in zip(histories, lengths, strict=True)],
                              [s for s, _ in lengths], tables, PAGE,
                              logits_indices=list(range(15)))
    return prefix, step, kv


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "gemma3"])
@pytest.mark.parametrize(("weights", "kv_dtype", "tolerance"), [
    # Packed layers quantize their input to int8: a last-bit difference upstream (qwen3's q/k norm
    # sums in another order) can move one activation to the next int8 step, hence 2e-3 there.
    ("dense", torch.float32, 2e-4), ("Q4_0", torch.float32, 2e-3), ("Q4_1", torch.float32, 2e-3),
    ("Q8_0", torch.float32, 2e-3), ("mixed", torch.float32, 2e-3),
    # The Python path attends a fresh prefill over its unrounded K/V, the native one always reads
    # the float16 cache: the K/V rounding (~5e-4 relative) is the whole difference.
    ("dense", torch.float16, 3e-3),
])
def test_native_forward_equals_python_layers(kind, weights, kv_dtype, tolerance):
    require_native()
    config = tiny(kind)
    model = random_model(config)
    if weights != "dense":
        quantize_linears(model, None if weights == "mixed" else QuantType[weights])
    if weights == "mixed":
        assert model.layers[0].self_attn.qkv_proj.qtypes == MIXED_PARTS
    prefix, step, kv_python = ragged_batch(config, kv_dtype)
    _, _, kv_native = ragged_batch(config, kv_dtype)
    model(prefix, kv_python, PAGE)
    expected = model(step, kv_python, PAGE)
    fused = NativeForward.build(model)
    assert fused is not None, "the native forward must accept this model"
    assert (fused.backend, model.backend) == ("native", "torch") and fused.kernels == native_kernels_in_use().variant
    fused(prefix, kv_native, PAGE)
    got = fused(step, kv_native, PAGE)
    assert got.shape == expected.shape == (15, config.vocab_size)
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    kv_tolerance = 4e-3 if kv_dtype == torch.float16 else tolerance  # two float16 steps
    for (k_py, v_py), (k_nat, v_nat) in zip(kv_python, kv_native, strict=True):
        torch.testing.assert_close(k_nat.float(), k_py.float(), rtol=kv_tolerance, atol=kv_tolerance)
        torch.testing.assert_close(v_nat.float(), v_py.float(), rtol=kv_tolerance, atol=kv_tolerance)


@pytest.mark.parametrize("qtype", [t for t in QuantType if t.block_weights == 32], ids=lambda t: t.name)
def test_packed_embedding_rows_equal_dequantized_table(qtype):
    require_native()
    weight = torch.randn(50, 96, generator=torch.Generator().manual_seed(2))
    raw = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType(int(qtype)))
    packed = pack_gguf(torch.from_numpy(np.ascontiguousarray(raw)), qtype, 96)
    ids = torch.tensor([0, 49, 7, 7, 8, 15, 16, 31])
    expected = dequantize(packed)[ids]
    assert torch.equal(embedding_rows(packed, ids), expected)
    with pytest.raises(RuntimeError, match="outside"):
        embedding_rows(packed, torch.tensor([50]))


def test_native_forward_refuses_what_it_cannot_serve():
    require_native()
    model = random_model(tiny("llama")).to(torch.bfloat16)
    assert NativeForward.build(model) is None
