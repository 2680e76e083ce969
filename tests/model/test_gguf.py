"""GGUF files written by the tests (every supported weight type) load and match transformers.

The tiny model is built with transformers, its q/k rows permuted into llama.cpp's interleaved
order exactly as llama.cpp's converter does, quantized with `gguf`, and written with GGUFWriter.
The reference is the transformers model holding the same quantize->dequantize round-tripped
weights, so any mistake in the row permutation or dequantization shows up in the logits.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers
from astrai.model import ModelLoadError, load_model
from astrai.model.kernels import native, native_unavailable_reason
from astrai.model.quantized import QuantizedEmbedding, QuantizedLinear

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}
LAYER = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
         "self_attn.v_proj.bias": "attn_v.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
         "self_attn.k_norm.weight": "attn_k_norm.weight",
         "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
         "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
         "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_name(hf_name: str) -> str:
    if hf_name in GLOBAL:
        return GLOBAL[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{LAYER[rest]}"


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's permute: rotate-half rows -> interleaved pairs."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def byte_tokens() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [bytes_to_unicode()[b] for b in range(256)]


def write_gguf(path: Path, model, qtype: gguf.GGMLQuantizationType, architecture: str = "llama",
               override: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]] | None = None) -> None:
    """Write `model` as llama.cpp would; matrices in `qtype`, norms in F32."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    tokens = byte_tokens() + SPECIALS
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3] * len(SPECIALS))
    writer.add_token_merges([])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(258)
    writer.add_chat_template(TEMPLATE)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # tied heads are stored once, as token_embd
        data = tensor.numpy()
        if architecture != "llama":  # llama.cpp keeps qwen's rotate-half (NEOX) order
            pass
        elif name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, c.num_key_value_heads)
        kind = gguf.GGMLQuantizationType.F32 if data.ndim == 1 else qtype
        if override and name in override:
            data, kind = override[name]
            writer.add_tensor(gguf_name(name), data, raw_dtype=kind)
            continue
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name(name), data.astype(np.float32))
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name(name), data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def round_trip(model, qtype: gguf.GGMLQuantizationType) -> None:
    """Replace each matrix by dequantize(quantize(w)): what a reader of the file must see."""
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
                data = param.numpy()
                if qtype == gguf.GGMLQuantizationType.F16:
                    back = data.astype(np.float16).astype(np.float32)
                else:
                    back = gguf.quants.dequantize(gguf.quants.quantize(data, qtype), qtype)
                param.copy_(torch.from_numpy(np.ascontiguousarray(back, dtype=np.float32)))


@pytest.fixture(scope="module")
def hf_tiny(randomize):
    config = transformers.LlamaConfig(
        vocab_size=259, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    randomize(model, seed=7)
    return model


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantized_gguf_matches_transformers(hf_tiny, qtype, tmp_path):
    kind = gguf.GGMLQuantizationType[qtype]
    path = tmp_path / f"tiny-{qtype}.gguf"
    write_gguf(path, hf_tiny, kind)
    reference = transformers.AutoModelForCausalLM.from_config(hf_tiny.config, dtype=torch.float32).eval()
    reference.load_state_dict(hf_tiny.state_dict())
    round_trip(reference, kind)

    model, tokenizer = load_model(path, dtype=torch.float32, quantization="none")
    assert model.config.num_parameters() == sum(p.numel() for p in reference.parameters())
    ids = torch.randint(0, 259, (40,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(ids[None]).logits[0]
    ours = model.logits(ids)
    assert float((ours - expected).abs().max() / expected.abs().max()) <= 1e-4

    assert tokenizer.bos_token_id == 257 and tokenizer.eos_token_ids == [258]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "héllo 😀"}])
    assert text == "<|im_start|>user\nhéllo 😀<|im_end|>\n"
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=False) == text


@pytest.mark.parametrize("architecture", ["qwen2", "qwen3"])
@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_qwen_gguf_matches_transformers(architecture, qtype, randomize, tmp_path):
    """qwen2 (q/k/v bias) and qwen3 (q/k norm, head_dim 32 != 64/4) files, rows not permuted."""
    config_cls = transformers.Qwen2Config if architecture == "qwen2" else transformers.Qwen3Config
    extra = {"head_dim": 32} if architecture == "qwen3" else {}
    config = config_cls(vocab_size=259, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, **extra)
    hf_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    randomize(hf_model, seed=11)
    kind = gguf.GGMLQuantizationType[qtype]
    path = tmp_path / f"{architecture}.gguf"
    write_gguf(path, hf_model, kind, architecture=architecture)
    round_trip(hf_model, kind)

    model, _ = load_model(path, dtype=torch.float32, quantization="none")
    assert model.config.architecture == architecture and model.config.tie_word_embeddings
    assert model.config.attention_bias == (architecture == "qwen2")
    assert model.config.qk_norm == (architecture == "qwen3")
    ids = torch.randint(0, 259, (40,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf_model(ids[None]).logits[0]
    assert float((model.logits(ids) - expected).abs().max() / expected.abs().max()) <= 1e-4


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_low_bit_gguf_is_served_packed(hf_tiny, qtype, tmp_path):
    """quantization="auto" (the default) keeps the GGUF blocks: fused q/k/v (q/k rows un-permuted
    on the raw blocks) and gate/up, the token table and the untied head all packed; the logits stay
    close to the same file dequantized (the packed path quantizes activations, so not equal)."""
    if native() is None:
        pytest.fail(f"the native kernels must build here: {native_unavailable_reason()}")
    kind = gguf.GGMLQuantizationType[qtype]
    path = tmp_path / f"tiny-{qtype}.gguf"
    write_gguf(path, hf_tiny, kind)
    packed, _ = load_model(path)
    dense, _ = load_model(path, dtype=torch.float32, quantization="none")
    layer = packed.layers[1]
    for module in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj,
                   packed.head_module):
        assert isinstance(module, QuantizedLinear) and [q.name for q in module.qtypes] == [qtype]
    assert isinstance(packed.embed_tokens, QuantizedEmbedding) and packed.lm_head is None
    assert packed.dtype == torch.float32 and packed.low_bit and not dense.low_bit
    ids = torch.randint(0, 259, (40,), generator=torch.Generator().manual_seed(4))
    got, expected = packed.logits(ids), dense.logits(ids)
    assert float((got - expected).norm() / expected.norm()) < 0.05


def test_gguf_without_permutation_would_differ(hf_tiny, tmp_path):
    """Guard: the q/k permutation matters, so a loader that skipped undoing it would fail above."""
    c = hf_tiny.config
    w = hf_tiny.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert not np.array_equal(llama_cpp_permute(w, c.num_attention_heads), w)


def test_unsupported_quantization_is_named(hf_tiny, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    rows, cols = hf_tiny.state_dict()[name].shape
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ4_NL]
    raw = np.zeros((rows, cols // block * size), dtype=np.uint8)
    path = tmp_path / "iq4.gguf"
    write_gguf(path, hf_tiny, gguf.GGMLQuantizationType.F32, override={name: (raw, gguf.GGMLQuantizationType.IQ4_NL)})
    with pytest.raises(ModelLoadError, match=r"iq4\.gguf.*blk\.1\.ffn_up\.weight.*unsupported quantization IQ4_NL"):
        load_model(path)


def test_unknown_gguf_architecture_is_named(hf_tiny, tmp_path):
    path = tmp_path / "falcon.gguf"
    write_gguf(path, hf_tiny, gguf.GGMLQuantizationType.F32, architecture="falcon")
    with pytest.raises(ModelLoadError, match=r"falcon\.gguf.*unsupported architecture 'falcon'"):
        load_model(path)


@pytest.mark.parametrize("size", [1_000_000, 10_000_000])
def test_truncated_gguf_is_named(gguf_dir, tmp_path, size):
    """Cut inside the metadata (1 MB) and inside the tensor data (10 MB)."""
    source = gguf_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path = tmp_path / "cut.gguf"
    with open(source, "rb") as handle:
        path.write_bytes(handle.read(size))
    with pytest.raises(ModelLoadError, match=r"cut\.gguf.*truncated"):
        load_model(path)
