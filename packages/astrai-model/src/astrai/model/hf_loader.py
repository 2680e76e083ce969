"""Load a Hugging Face model directory: config.json, safetensors (single or sharded), tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tokenizers import Tokenizer as BackendTokenizer

from .architectures import Architecture, architecture_names, for_hf
from .config import ModelConfig
from .errors import ModelLoadError
from .tokenizer import Tokenizer


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(path, "file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(path, "expected a JSON object")
    return data


def hf_family(raw: dict[str, Any], source: Path) -> Architecture:
    """The registered family of a config.json, or a ModelLoadError naming what it says."""
    family = for_hf(raw.get("model_type"), raw.get("architectures"))
    if family is None:
        found = raw.get("model_type") or raw.get("architectures")
        raise ModelLoadError(source, f"unsupported architecture {found!r} (supported: {', '.join(architecture_names())})")
    return family


def parse_hf_config(raw: dict[str, Any], source: Path, name: str) -> ModelConfig:
    """Map config.json onto ModelConfig through its family, refusing anything we would compute differently."""
    family = hf_family(raw, source)
    try:
        return family.config_from_hf(raw, source, name)
    except KeyError as exc:
        raise ModelLoadError(source, f"missing required key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(source, f"invalid value: {exc}") from exc


class SafetensorsWeights:
    """Tensor lookup across one or many safetensors shards."""

    def __init__(self, directory: Path, family: Architecture | None = None) -> None:
        self.family = family  # converts tensors to this package's convention (e.g. Gemma's norms)
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ModelLoadError(index, "missing 'weight_map'")
            self.file_of = {name: directory / shard for name, shard in weight_map.items()}
        elif single.exists():
            self.file_of = {}
            for name in self._open(single).keys():
                self.file_of[name] = single
        else:
            raise ModelLoadError(directory, "no model.safetensors or model.safetensors.index.json found")
        self._handles: dict[Path, Any] = {}
        for shard in sorted(set(self.file_of.values())):
            handle = self._open(shard)
            missing = [n for n, f in self.file_of.items() if f == shard and n not in set(handle.keys())]
            if missing:
                raise ModelLoadError(shard, f"index lists tensor {missing[0]!r} but the shard lacks it")
            self._handles[shard] = handle

    @staticmethod
    def _open(path: Path) -> Any:
        if not path.is_file():
            raise ModelLoadError(path, "safetensors file not found")
        try:
            return safe_open(str(path), framework="pt")
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ModelLoadError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from exc

    def names(self) -> set[str]:
        return set(self.file_of)

    def get(self, name: str) -> tuple[torch.Tensor, str]:
        path = self.file_of[name]
        try:
            tensor = self._handles[path].get_tensor(name)
        except Exception as exc:
            raise ModelLoadError(path, f"cannot read tensor {name!r}: {exc}") from exc
        return (tensor if self.family is None else self.family.hf_tensor(name, tensor)), str(path)


def load_hf_tokenizer(directory: Path, config: ModelConfig) -> Tokenizer:
    """tokenizer.json plus tokenizer_config.json (special tokens, chat template)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(directory, "tokenizer.json not found")
    try:
        backend = BackendTokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelLoadError(path, f"cannot parse tokenizer: {exc}") from exc
    settings = read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").exists() else {}
    template = settings.get("chat_template")
    jinja_file = directory / "chat_template.jinja"
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    if isinstance(template, list):  # several named templates: use the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)

    def token(key: str) -> str | None:
        value = settings.get(key)
        return value.get("content") if isinstance(value, dict) else value

    return Tokenizer(
        backend,
        bos_token=token("bos_token"),
        eos_token=token("eos_token"),
        eos_token_ids=config.eos_token_ids,
        chat_template=template,
        add_bos_token=bool(settings.get("add_bos_token", False)),
        special_tokens={"unk_token": token("unk_token"), "pad_token": token("pad_token")},
    )
