"""The model families AstrAI runs: one module per family, one registry entry each.

To add a family: write `architectures/<family>.py` with a subclass of `Architecture` (its GGUF
and config.json names, how its metadata maps onto `ModelConfig`, its tensor names, whether
llama.cpp interleaved its q/k rows, its decoder layer, its turn format and stop tokens), then
list an instance in `FAMILIES` below. Loaders and the forward look families up here.
"""

from __future__ import annotations

from .base import Architecture, GGUFMetadata
from .gemma3 import Gemma3
from .llama import Llama, Mistral
from .qwen2 import Qwen2
from .qwen3 import Qwen3

FAMILIES: tuple[Architecture, ...] = (Llama(), Mistral(), Qwen2(), Qwen3(), Gemma3())
_BY_NAME = {family.name: family for family in FAMILIES}
_BY_GGUF = {name: family for family in FAMILIES for name in family.gguf_names}
_BY_HF = {name: family for family in FAMILIES for name in family.hf_names}


def architecture_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def architecture(name: str) -> Architecture:
    """The family of `ModelConfig.architecture` `name` (KeyError if unknown)."""
    return _BY_NAME[name]


def for_gguf(general_architecture: str) -> Architecture | None:
    """The family reading GGUF files of this `general.architecture` (None: not supported)."""
    return _BY_GGUF.get(general_architecture)


def for_hf(model_type: str | None, architectures: list[str] | None) -> Architecture | None:
    """The family reading a config.json with this `model_type` / `architectures` (None: unsupported)."""
    if model_type in _BY_HF:
        return _BY_HF[model_type]
    return next((_BY_HF[a] for a in architectures or [] if a in _BY_HF), None)


def gguf_architecture_names() -> tuple[str, ...]:
    return tuple(_BY_GGUF)


__all__ = ["FAMILIES", "Architecture", "GGUFMetadata", "architecture", "architecture_names", "for_gguf", "for_hf",
           "gguf_architecture_names"]
