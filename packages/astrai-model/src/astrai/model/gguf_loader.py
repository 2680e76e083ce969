"""Load a GGUF file: config and tokenizer from its metadata, weights dequantized with `gguf`.

The file's `general.architecture` picks the family (`architectures/`), which maps its metadata
onto ModelConfig and its tensor names onto the internal (Hugging Face) names. Families whose
q/k rows llama.cpp's converter interleaved (pairs (i, i + d/2) become neighbours) get them
un-permuted here so the rotate-half RoPE applies. Every check that can fail on the header alone
(architecture, tensor names, block types) runs before any weight is allocated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .architectures import Architecture, GGUFMetadata, for_gguf, gguf_architecture_names
from .architectures.base import GLOBAL_TENSORS
from .config import ModelConfig
from .errors import ModelLoadError
from .gguf_reader import GGUFContainer, GGUFFormatError, TensorInfo
from .gguf_tokenizer import gguf_tokenizer
from .tokenizer import Tokenizer

try:
    import gguf
except ImportError:  # pragma: no cover - gguf is a declared dependency
    gguf = None

FLOAT_TYPES = ("F32", "F16", "BF16")
SUPPORTED_QUANTS = (
    *FLOAT_TYPES, "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)
_SPLIT_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


class GGUFFile:
    """A parsed GGUF file (or split set): metadata access, its family, and tensors by internal name."""

    def __init__(self, path: str | Path) -> None:
        if gguf is None:  # pragma: no cover
            raise ModelLoadError(path, "the 'gguf' package is required to read GGUF files")
        self.path = str(path)
        if not Path(path).is_file():
            raise ModelLoadError(path, "GGUF file not found")
        try:
            self.container = GGUFContainer(self.path)
        except (GGUFFormatError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise ModelLoadError(path, f"not a readable GGUF file: {exc}") from exc
        self.architecture = str(self.field("general.architecture"))
        family = for_gguf(self.architecture)
        if family is None:
            raise ModelLoadError(self.path, f"unsupported architecture {self.architecture!r} "
                                            f"(supported: {', '.join(gguf_architecture_names())})")
        self.family: Architecture = family
        self.tensors: dict[str, TensorInfo] = {}  # internal name -> info (weights only)
        self.config_tensors: dict[str, TensorInfo] = {}  # GGUF name -> info (read into the config)
        for tensor in self.container.tensors.values():
            name = self._internal_name(tensor.name)
            if name is not None:
                self.tensors[name] = tensor
            elif tensor.name in family.gguf_config_tensors:
                self.config_tensors[tensor.name] = tensor
            else:
                raise ModelLoadError(self.path, f"unexpected tensor {tensor.name!r} for a {self.architecture} model")
        for tensor in self.container.tensors.values():
            kind = gguf.GGMLQuantizationType(tensor.type_id).name
            if kind not in SUPPORTED_QUANTS:
                raise ModelLoadError(self.path, f"tensor {tensor.name}: unsupported quantization {kind} "
                                                f"(supported: {', '.join(SUPPORTED_QUANTS)})")

    def field(self, key: str, default: Any = ...) -> Any:
        if key not in self.container.metadata:
            if default is ...:
                raise ModelLoadError(self.path, f"metadata key {key!r} is missing")
            return default
        return self.container.metadata[key]

    def _internal_name(self, name: str) -> str | None:
        if name in GLOBAL_TENSORS:
            return GLOBAL_TENSORS[name]
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[2] in self.family.gguf_layer_tensors:
            return f"model.layers.{parts[1]}.{self.family.gguf_layer_tensors[parts[2]]}"
        return None

    @property
    def model_name(self) -> str:
        """`general.name`, else the file name without `.gguf` and any `-0000k-of-0000n` suffix."""
        name = self.container.metadata.get("general.name")
        if isinstance(name, str) and name.strip():
            return name.strip()
        return _SPLIT_SUFFIX.sub("", Path(self.path).stem)

    def metadata(self) -> GGUFMetadata:
        return GGUFMetadata(self.container.metadata, self.path, frozenset(self.tensors) | frozenset(self.config_tensors),
                            self._read_config_tensor)

    def _read_config_tensor(self, gguf_name: str) -> torch.Tensor:
        info = self.config_tensors[gguf_name]
        return torch.from_numpy(self._dequantize(info).copy())

    def config(self, name: str) -> ModelConfig:
        try:
            return self.family.config_from_gguf(self.metadata(), name)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(self.path, f"inconsistent metadata: {exc}") from exc

    def _dequantize(self, tensor: TensorInfo) -> np.ndarray:
        qtype = gguf.GGMLQuantizationType(tensor.type_id)
        try:
            raw = self.container.raw(tensor)
            rows = raw.reshape(*tensor.shape[:-1], -1) if len(tensor.shape) > 1 else raw[None]
            return np.asarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32).reshape(tensor.shape)
        except Exception as exc:
            raise ModelLoadError(self.path, f"tensor {tensor.name}: cannot dequantize {qtype.name}: {exc}") from exc

    def tensor(self, name: str, config: ModelConfig) -> tuple[torch.Tensor, str]:
        """Dequantized float32 tensor in the internal layout (rows permuted back for q/k)."""
        array = self._dequantize(self.tensors[name])
        weight = torch.from_numpy(array if array.flags.writeable else array.copy())
        return self.unpermute(name, weight, config), self.path

    def unpermute(self, name: str, rows: torch.Tensor, config: ModelConfig) -> torch.Tensor:
        """Undo the converter's q/k row interleave (on float rows or raw block rows alike)."""
        if self.family.interleaved_qk_rows:
            if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
                return unpermute_rows(rows, config.num_heads)
            if name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
                return unpermute_rows(rows, config.num_kv_heads)
        return rows

    def quant_types(self) -> set[str]:
        """Names of the block types the file's tensors use (e.g. {"F32", "Q4_1", "Q8_0"})."""
        return {gguf.GGMLQuantizationType(t.type_id).name for t in self.tensors.values()}

    def tokenizer(self, eos_token_ids: list[int]) -> Tokenizer:
        return gguf_tokenizer(self.container.metadata, self.path, eos_token_ids)


def unpermute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head interleave: rows (2j, 2j+1) go back to (j, j + d/2)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return weight.reshape(heads, rows // heads // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest)
