"""Bad input names the file and the problem; it never yields a silently wrong model."""

from __future__ import annotations

import json

import pytest
import torch
from astrai.model import ModelLoadError, load_model
from safetensors.torch import load_file, save_file


def test_tiny_directory_loads(tiny_llama_dir):
    model, tokenizer = load_model(tiny_llama_dir, dtype="float32")
    assert model.dtype == torch.float32 and model.config.name == "tiny-llama"
    assert tokenizer.encode("t5 t7") == [5, 7]
    assert model.config.eos_token_ids == tokenizer.eos_token_ids == [2]


def test_generation_config_adds_stop_ids(tiny_llama_dir):
    (tiny_llama_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 5]}))
    model, tokenizer = load_model(tiny_llama_dir)
    assert model.config.eos_token_ids == tokenizer.eos_token_ids == [2, 5]
    assert model.dtype == torch.float32  # the checkpoint's own dtype when none is asked for


def test_unknown_architecture(tiny_llama_dir):
    config_path = tiny_llama_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["model_type"], config["architectures"] = "gpt2", ["GPT2LMHeadModel"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json: unsupported architecture 'gpt2'"):
        load_model(tiny_llama_dir)


def test_unsupported_rope_scaling(tiny_llama_dir):
    config_path = tiny_llama_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json: unsupported rope scaling 'yarn'"):
        load_model(tiny_llama_dir)


def test_missing_paths(tmp_path, tiny_llama_dir):
    with pytest.raises(ModelLoadError, match=r"nope\.gguf: GGUF file not found"):
        load_model(tmp_path / "nope.gguf")
    with pytest.raises(ModelLoadError, match="not a built-in model"):
        load_model(tmp_path / "no-such-dir")
    (tiny_llama_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json: file not found"):
        load_model(tiny_llama_dir)


def test_missing_weights_and_tokenizer(tiny_llama_dir):
    (tiny_llama_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json not found"):
        load_model(tiny_llama_dir)
    (tiny_llama_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(tiny_llama_dir)


def test_truncated_safetensors(tiny_llama_dir):
    weights = tiny_llama_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: .*truncated"):
        load_model(tiny_llama_dir)


def test_wrong_tensor_shape(tiny_llama_dir):
    weights = tiny_llama_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.1.mlp.down_proj.weight"] = torch.zeros(32, 60)
    save_file(tensors, weights)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: tensor model\.layers\.1\.mlp\.down_proj\.weight "
                                             r"has shape \(32, 60\), expected \(32, 64\)"):
        load_model(tiny_llama_dir)


def test_missing_and_unexpected_tensors(tiny_llama_dir):
    weights = tiny_llama_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)  # a bias llama does not have
    save_file(tensors, weights)
    with pytest.raises(ModelLoadError, match=r"unexpected tensor.*q_proj\.bias"):
        load_model(tiny_llama_dir)
    del tensors["model.layers.0.self_attn.q_proj.bias"], tensors["model.norm.weight"]
    save_file(tensors, weights)
    with pytest.raises(ModelLoadError, match=r"missing 1 tensor.*model\.norm\.weight"):
        load_model(tiny_llama_dir)


def test_bad_dtype_and_device(tiny_llama_dir):
    with pytest.raises(ModelLoadError, match="unsupported dtype 'int8'"):
        load_model(tiny_llama_dir, dtype="int8")
    with pytest.raises(ModelLoadError, match="invalid device 'gpu0'"):
        load_model(tiny_llama_dir, device="gpu0")
