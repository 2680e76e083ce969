"""A GGUF the engine cannot run is one ModelLoadError naming the file and the reason, raised
from the header alone (before any weight is allocated); types without a native kernel that can
be dequantized (Q2_K) load with one log line naming them.

The bad files are llama.cpp's own tiny Llama-3 conversion (tests/data/tiny/) with a few bytes
changed, or written here with the `gguf` package.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from astrai.model import ModelLoadError, load_model

TINY = Path(__file__).parent.parent / "data" / "tiny"
SOURCE = TINY / "tiny-llama3-f32.gguf"


def patched(tmp_path: Path, name: str, edit) -> Path:
    data = bytearray(SOURCE.read_bytes())
    edit(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def tensor_type_offset(data: bytearray, tensor: str) -> int:
    """Byte offset of `tensor`'s ggml type id in the header's tensor-info list."""
    key = struct.pack("<Q", len(tensor)) + tensor.encode()
    at = data.index(key) + len(key)
    dims = struct.unpack_from("<I", data, at)[0]
    return at + 4 + 8 * dims


def test_wrong_magic(tmp_path):
    path = patched(tmp_path, "magic.gguf", lambda d: d.__setitem__(slice(0, 4), b"GGML"))
    with pytest.raises(ModelLoadError, match=r"magic\.gguf: not a readable GGUF file: bad magic"):
        load_model(path)


def test_not_a_file_at_all(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.gguf: not a readable GGUF file: empty file"):
        load_model(tmp_path / "empty.gguf")


def test_unknown_tensor_type(tmp_path):
    def edit(data):
        struct.pack_into("<I", data, tensor_type_offset(data, "output_norm.weight"), 99)

    with pytest.raises(ModelLoadError, match=r"type\.gguf: not a readable GGUF file: tensor output_norm\.weight: "
                                             r"unknown ggml type id 99"):
        load_model(patched(tmp_path, "type.gguf", edit))


def test_unknown_architecture(tmp_path):
    def edit(data):
        key = b"general.architecture" + struct.pack("<IQ", 8, 5) + b"llama"
        at = data.index(key) + len(key) - 5
        data[at : at + 5] = b"mamba"

    with pytest.raises(ModelLoadError, match=r"arch\.gguf: unsupported architecture 'mamba' \(supported: llama, "
                                             r"mistral, qwen2, qwen3, gemma3\)"):
        load_model(patched(tmp_path, "arch.gguf", edit))


@pytest.mark.parametrize("fraction", [0.01, 0.6])
def test_truncated_file(tmp_path, fraction):
    """Cut inside the metadata and inside the tensor data."""
    size = SOURCE.stat().st_size
    path = patched(tmp_path, "cut.gguf", lambda d: d.__delitem__(slice(int(size * fraction), None)))
    with pytest.raises(ModelLoadError, match=r"cut\.gguf: not a readable GGUF file: .*truncated"):
        load_model(path)


def test_split_model_needs_every_part_and_its_first(tmp_path):
    for part in TINY.glob("tiny-llama3-f32-split-*.gguf"):
        shutil.copy(part, tmp_path / part.name)
    with pytest.raises(ModelLoadError, match=r"00002-of-00003\.gguf: .*open its first part"):
        load_model(tmp_path / "tiny-llama3-f32-split-00002-of-00003.gguf")
    (tmp_path / "tiny-llama3-f32-split-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelLoadError, match=r"00001-of-00003\.gguf: .*split part tiny-llama3-f32-split-00003-of-00003"
                                             r"\.gguf not found"):
        load_model(tmp_path / "tiny-llama3-f32-split-00001-of-00003.gguf")


def q2_k_blocks(rows: int, cols: int, seed: int) -> np.ndarray:
    """Random but valid Q2_K rows: 16 scale bytes, 64 quant bytes, fp16 d and dmin per 256 weights."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows, cols // 256, 84), dtype=np.uint8)
    blocks[..., 80:82] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    blocks[..., 82:84] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


def test_q2_k_is_dequantized_with_one_log_line(tmp_path, caplog):
    path = tmp_path / "q2k.gguf"
    hidden, ff, vocab = 256, 512, 300
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_context_length, 256), (writer.add_embedding_length, hidden),
                       (writer.add_feed_forward_length, ff), (writer.add_head_count, 4), (writer.add_head_count_kv, 4),
                       (writer.add_layer_norm_rms_eps, 1e-5)):
        add(value)
    writer.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *[chr(0x61 + i % 26) * (1 + i // 26) for i in range(41)]]
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(41)])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * 41)
    rng = np.random.default_rng(0)
    dense = {"token_embd.weight": (vocab, hidden), "blk.0.attn_q.weight": (hidden, hidden),
             "blk.0.attn_k.weight": (hidden, hidden), "blk.0.attn_v.weight": (hidden, hidden),
             "blk.0.attn_output.weight": (hidden, hidden), "blk.0.ffn_gate.weight": (ff, hidden)}
    for name, shape in dense.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32) * 0.05)
    writer.add_tensor("blk.0.ffn_up.weight", q2_k_blocks(ff, hidden, 1), raw_dtype=gguf.GGMLQuantizationType.Q2_K)
    writer.add_tensor("blk.0.ffn_down.weight", q2_k_blocks(hidden, ff, 2), raw_dtype=gguf.GGMLQuantizationType.Q2_K)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with caplog.at_level(logging.INFO, logger="astrai.model"):
        model, tokenizer = load_model(path, dtype=torch.float32)
    lines = [r.getMessage() for r in caplog.records if "dequantizing" in r.getMessage()]
    assert lines == ["q2k.gguf: dequantizing its Q2_K tensors to float32 (no native kernel for these types)"]
    up = model.layers[0].mlp.gate_up_proj.weight[ff:]
    raw = q2_k_blocks(ff, hidden, 1)
    assert torch.equal(up, torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q2_K)))
    assert torch.isfinite(model.logits(tokenizer.encode("abc", add_special_tokens=True))).all()
