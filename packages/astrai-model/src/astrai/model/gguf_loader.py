"""Load a GGUF file: config and tokenizer from its metadata, weights dequantized with `gguf`.

llama.cpp's converter interleaves the rows of attn_q/attn_k for llama-architecture files
(pairs (i, i + d/2) become neighbours); we undo that so the rotate-half RoPE applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer

from .config import ModelConfig
from .errors import ModelLoadError
from .gguf_reader import GGUFContainer, GGUFFormatError, TensorInfo
from .tokenizer import Tokenizer

try:
    import gguf
except ImportError:  # pragma: no cover - gguf is a declared dependency
    gguf = None

SUPPORTED_QUANTS = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)
# llama.cpp writes these architectures with interleaved q/k rows; qwen files keep rotate-half.
PERMUTED_ARCHITECTURES = ("llama", "mistral")
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Pre-tokenizer split patterns by `tokenizer.ggml.pre`; anything else uses GPT-2's byte-level regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_PATTERNS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}
CONTROL, USER_DEFINED = 3, 4


class GGUFFile:
    """A parsed GGUF file: metadata access and tensors by HF name."""

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
        self.tensors: dict[str, TensorInfo] = {}
        for tensor in self.container.tensors.values():
            name = self._hf_name(tensor.name)
            if name is not None:
                self.tensors[name] = tensor
            elif tensor.name == "rope_freqs.weight":
                raise ModelLoadError(self.path, "rope_freqs (precomputed RoPE factors) is not supported")
            else:
                raise ModelLoadError(self.path, f"unexpected tensor {tensor.name!r} for a {self.architecture} model")

    def field(self, key: str, default: Any = ...) -> Any:
        if key not in self.container.metadata:
            if default is ...:
                raise ModelLoadError(self.path, f"metadata key {key!r} is missing")
            return default
        return self.container.metadata[key]

    @staticmethod
    def _hf_name(name: str) -> str | None:
        if name in GLOBAL_NAMES:
            return GLOBAL_NAMES[name]
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
            return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
        return None

    def config(self, name: str) -> ModelConfig:
        arch = self.architecture
        if arch not in ("llama", "mistral", "qwen2", "qwen3"):
            raise ModelLoadError(self.path, f"unsupported architecture {arch!r} (supported: llama, mistral, qwen2, qwen3)")
        hidden = int(self.field(f"{arch}.embedding_length"))
        heads = int(self.field(f"{arch}.attention.head_count"))
        tokens = self.field("tokenizer.ggml.tokens", None)
        vocab = int(self.field(f"{arch}.vocab_size", len(tokens) if tokens is not None else 0))
        scaling = None
        scaling_type = self.field(f"{arch}.rope.scaling.type", None)
        if scaling_type not in (None, "none"):
            if scaling_type != "linear":
                raise ModelLoadError(self.path, f"unsupported rope scaling type {scaling_type!r}")
            scaling = {"rope_type": "linear", "factor": float(self.field(f"{arch}.rope.scaling.factor"))}
        eos = self.field("tokenizer.ggml.eos_token_id", None)
        bos = self.field("tokenizer.ggml.bos_token_id", None)
        try:
            return ModelConfig(
                name=name,
                architecture=arch,
                vocab_size=vocab,
                hidden_size=hidden,
                intermediate_size=int(self.field(f"{arch}.feed_forward_length")),
                num_layers=int(self.field(f"{arch}.block_count")),
                num_heads=heads,
                num_kv_heads=int(self.field(f"{arch}.attention.head_count_kv", heads)),
                head_dim=int(self.field(f"{arch}.attention.key_length", hidden // heads)),
                max_position_embeddings=int(self.field(f"{arch}.context_length", 2048)),
                rms_norm_eps=float(self.field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
                rope_theta=float(self.field(f"{arch}.rope.freq_base", 10000.0)),
                rope_scaling=scaling,
                tie_word_embeddings="lm_head.weight" not in self.tensors,
                attention_bias="model.layers.0.self_attn.q_proj.bias" in self.tensors,
                qk_norm="model.layers.0.self_attn.q_norm.weight" in self.tensors,
                dtype="float32" if self.has_packable_tensors() else "bfloat16",  # low-bit: float32 activations
                bos_token_id=None if bos is None else int(bos),
                eos_token_ids=[] if eos is None else [int(eos)],
            )
        except ValueError as exc:
            raise ModelLoadError(self.path, f"inconsistent metadata: {exc}") from exc

    def tensor(self, name: str, config: ModelConfig) -> tuple[torch.Tensor, str]:
        """Dequantized float32 tensor in HF layout (rows permuted back for q/k)."""
        tensor = self.tensors[name]
        qtype = gguf.GGMLQuantizationType(tensor.type_id)
        if qtype.name not in SUPPORTED_QUANTS:
            raise ModelLoadError(self.path, f"tensor {tensor.name}: unsupported quantization {qtype.name}")
        try:
            raw = self.container.raw(tensor)
            rows = raw.reshape(*tensor.shape[:-1], -1) if len(tensor.shape) > 1 else raw[None]
            array = np.asarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32).reshape(tensor.shape)
        except Exception as exc:
            raise ModelLoadError(self.path, f"tensor {tensor.name}: cannot dequantize {qtype.name}: {exc}") from exc
        weight = torch.from_numpy(array if array.flags.writeable else array.copy())
        if self.architecture in PERMUTED_ARCHITECTURES:
            if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
                weight = unpermute_rows(weight, config.num_heads)
            elif name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
                weight = unpermute_rows(weight, config.num_kv_heads)
        return weight, self.path

    def quant_types(self) -> set[str]:
        """Names of the block types the file's tensors use (e.g. {"F32", "Q4_1", "Q8_0"})."""
        return {gguf.GGMLQuantizationType(t.type_id).name for t in self.tensors.values()}

    def has_packable_tensors(self) -> bool:
        """Whether any tensor is in a block type the native low-bit kernels serve."""
        return bool(self.quant_types() & {"Q4_0", "Q4_1", "Q8_0"})

    def tokenizer(self, eos_token_ids: list[int]) -> Tokenizer:
        return gguf_tokenizer(self, eos_token_ids)


def unpermute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head interleave: rows (2j, 2j+1) go back to (j, j + d/2)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return weight.reshape(heads, rows // heads // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest)


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def gguf_tokenizer(file: GGUFFile, eos_token_ids: list[int]) -> Tokenizer:
    """Byte-level BPE tokenizer from `tokenizer.ggml.*` metadata (GGUF model type gpt2)."""
    kind = file.field("tokenizer.ggml.model", None)
    if kind != "gpt2":
        raise ModelLoadError(file.path, f"unsupported GGUF tokenizer model {kind!r} (supported: gpt2 byte-level BPE)")
    tokens = [str(t) for t in file.field("tokenizer.ggml.tokens")]
    merges = [tuple(str(m).split(" ", 1)) for m in file.field("tokenizer.ggml.merges", [])]
    types = list(file.field("tokenizer.ggml.token_type", [1] * len(tokens)))
    alphabet = _byte_alphabet()
    letters = set(alphabet.values())
    spelled = [t if set(t) <= letters else "".join(alphabet[b] for b in t.encode()) for t in tokens]
    vocab = {token: i for i, token in enumerate(spelled)}
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pattern = SPLIT_PATTERNS.get(str(file.field("tokenizer.ggml.pre", "default")))
    if pattern is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    backend.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types, strict=False) if kind == CONTROL and set(t) <= letters]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, kind in zip(tokens, types, strict=False) if kind == USER_DEFINED]
    if user:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

    def token_at(key: str) -> str | None:
        index = file.field(key, None)
        return tokens[int(index)] if index is not None and int(index) < len(tokens) else None

    return Tokenizer(
        backend,
        bos_token=token_at("tokenizer.ggml.bos_token_id"),
        eos_token=token_at("tokenizer.ggml.eos_token_id"),
        eos_token_ids=eos_token_ids,
        chat_template=file.field("tokenizer.chat_template", None),
        add_bos_token=bool(file.field("tokenizer.ggml.add_bos_token", False)),
        special_tokens={
            "unk_token": token_at("tokenizer.ggml.unknown_token_id"),
            "pad_token": token_at("tokenizer.ggml.padding_token_id"),
        },
    )
