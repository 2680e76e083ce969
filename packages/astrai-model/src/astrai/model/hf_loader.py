"""Load a Hugging Face model directory: config.json, safetensors (single or sharded), tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tokenizers import Tokenizer as BackendTokenizer

from .config import ModelConfig
from .errors import ModelLoadError
from .rope import SUPPORTED_ROPE_TYPES, rope_type
from .tokenizer import Tokenizer

ARCHITECTURE_ALIASES = {
    "llama": "llama", "LlamaForCausalLM": "llama",
    "mistral": "mistral", "MistralForCausalLM": "mistral",
    "qwen2": "qwen2", "Qwen2ForCausalLM": "qwen2",
    "qwen3": "qwen3", "Qwen3ForCausalLM": "qwen3",
}


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


def parse_hf_config(raw: dict[str, Any], source: Path, name: str) -> ModelConfig:
    """Map config.json onto ModelConfig, refusing anything we would compute differently."""
    arch = ARCHITECTURE_ALIASES.get(raw.get("model_type", "")) or next(
        (ARCHITECTURE_ALIASES[a] for a in raw.get("architectures") or [] if a in ARCHITECTURE_ALIASES), None
    )
    if arch is None:
        found = raw.get("model_type") or raw.get("architectures")
        raise ModelLoadError(source, f"unsupported architecture {found!r} (supported: llama, mistral, qwen2, qwen3)")
    if raw.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(source, f"unsupported hidden_act {raw['hidden_act']!r} (only silu)")
    if raw.get("mlp_bias"):
        raise ModelLoadError(source, "mlp_bias=true is not supported")
    rope = dict(raw.get("rope_parameters") or {})
    scaling = raw.get("rope_scaling") or (rope if rope_type(rope) != "default" else None)
    if rope_type(scaling) not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(source, f"unsupported rope scaling {rope_type(scaling)!r} (supported: {SUPPORTED_ROPE_TYPES})")
    theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
    try:
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        max_len = int(raw.get("max_position_embeddings", 2048))
        window = raw.get("sliding_window")
        uses_window = arch == "mistral" or raw.get("use_sliding_window", False)
        if uses_window and window:
            max_len = min(max_len, int(window))  # beyond the window we would attend differently
        eos = raw.get("eos_token_id")
        eos_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        return ModelConfig(
            name=name,
            architecture=arch,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            max_position_embeddings=max_len,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=dict(scaling) if scaling else None,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=True if arch == "qwen2" else bool(raw.get("attention_bias", False)),
            qk_norm=arch == "qwen3",
            dtype=_dtype_name(raw.get("dtype") or raw.get("torch_dtype")),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )
    except KeyError as exc:
        raise ModelLoadError(source, f"missing required key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(source, f"invalid value: {exc}") from exc


def _dtype_name(value: Any) -> str:
    """The checkpoint's dtype as a default; float16 runs as float32 (no fast fp16 on CPU)."""
    return "float32" if value in ("float32", "float16", "float64") else "bfloat16"


class SafetensorsWeights:
    """Tensor lookup across one or many safetensors shards."""

    def __init__(self, directory: Path) -> None:
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
            return self._handles[path].get_tensor(name), str(path)
        except Exception as exc:
            raise ModelLoadError(path, f"cannot read tensor {name!r}: {exc}") from exc


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
