"""Shared fixtures: the bundled SmolLM2 and the real Gemma 3 file (each loaded once), transformers
references, tiny checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers
from astrai.model import bundled_gguf_path, load_model
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Test helpers beside this file (gguf_blocks) import by name: --import-mode=importlib does not put
# test folders on sys.path.
HELPERS = str(Path(__file__).parent)
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)
# The repo root, so the tests reach bench/fixtures (the Gemma file's cache, the tiny models' specs).
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def write_word_tokenizer(directory: Path, vocab_size: int) -> None:
    """A minimal word-level tokenizer.json (+ config) so a tiny checkpoint dir is complete."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    backend = BackendTokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "t1", "eos_token": "t2"}))


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Weights large enough that every component (norms, biases) visibly matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + std * noise if name.endswith("norm.weight") else std * noise)


@pytest.fixture(name="write_word_tokenizer", scope="session")
def write_word_tokenizer_fixture():
    return write_word_tokenizer


@pytest.fixture(name="randomize", scope="session")
def randomize_fixture():
    return randomize


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the bundled SmolLM2 dequantized to float32, loaded once per session."""
    return load_model("smollm2-135m-instruct", dtype=torch.float32, quantization="none")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF, assembled into the user's cache once per machine."""
    from bench.fixtures.gemma_file import gemma_gguf

    return gemma_gguf()


@pytest.fixture(scope="session")
def gemma(gemma_path):
    """(model, tokenizer) of the real Gemma file dequantized to float32, loaded once per session."""
    return load_model(gemma_path, dtype=torch.float32, quantization="none")


@pytest.fixture(scope="session")
def gguf_dir() -> Path:
    path = bundled_gguf_path()
    assert path.name == GGUF_NAME
    return path.parent


@pytest.fixture(scope="session")
def hf_tokenizer(gguf_dir):
    """transformers' own reading of the same GGUF tokenizer: the reference."""
    return transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)


@pytest.fixture
def tiny_llama_dir(tmp_path, randomize):
    """A tiny random llama checkpoint saved by transformers, with a word-level tokenizer."""
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model)
    directory = tmp_path / "tiny-llama"
    model.save_pretrained(directory)
    write_word_tokenizer(directory, config.vocab_size)
    return directory


@pytest.fixture(scope="session")
def native_kernels():
    """The kernels this machine would run (a `Kernels`). Built here even under
    ASTRAI_KERNELS=torch; a machine that can build them (compiler, ninja, a supported CPU) but
    fails to makes the test fail, never skip."""
    from astrai.model.kernels import NativeUnavailable, kernels, kernels_for
    from astrai.model.kernels.build import check_machine
    from astrai.model.kernels.isa import choose_variant, describe_support

    try:
        check_machine()
    except NativeUnavailable as exc:
        pytest.skip(f"this machine cannot build the native kernels: {exc}")
    chosen = kernels()
    if chosen is not None:
        return chosen
    variant = choose_variant()
    if variant is None:
        pytest.skip(f"no kernel variant runs on this CPU: {describe_support()}")
    return kernels_for(variant)


@pytest.fixture(scope="session", params=["avx2", "avx512", "amx"])
def variant_kernels(request):
    """Each instruction-set variant in turn; those this CPU cannot run skip, saying why (so a
    machine of each kind checks its own). One that the CPU runs but that fails to build fails."""
    from astrai.model.kernels import NativeUnavailable, kernels_for
    from astrai.model.kernels.build import check_machine
    from astrai.model.kernels.isa import support_of

    try:
        check_machine()
    except NativeUnavailable as exc:
        pytest.skip(f"this machine cannot build the native kernels: {exc}")
    support = support_of(request.param)
    if not support.supported:
        pytest.skip(f"{request.param} kernels do not run on this CPU: {support.reason}")
    return kernels_for(request.param)
