"""A BERT encoder (the sentence-embedding family: MiniLM, BGE, E5 ...) over packed token rows.

The input is a list of token-id sequences of different lengths. Every linear layer runs on the
concatenated rows of all sequences (no padding), which is where nearly all the work is; only
attention pads them into a [B, L] grid with a key mask. A batch whose sequences all have one
length skips the grid copies. float32 on the CPU; the weights load from a Hugging Face
`BertModel` safetensors file (an optional `bert.` prefix is accepted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from .errors import ModelLoadError


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT `config.json` the forward needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(path, f"cannot read the model config: {exc}") from None
        if raw.get("model_type") not in ("bert", None) or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError(path, f"not a BERT model with absolute positions (model_type "
                                       f"{raw.get('model_type')!r}); only the BERT family is supported")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ModelLoadError(path, f"unsupported hidden_act {raw.get('hidden_act')!r}; only gelu")
        try:
            return cls(vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
                       num_layers=int(raw["num_hidden_layers"]), num_heads=int(raw["num_attention_heads"]),
                       intermediate_size=int(raw["intermediate_size"]),
                       max_position_embeddings=int(raw["max_position_embeddings"]),
                       type_vocab_size=int(raw.get("type_vocab_size", 2)),
                       layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                       pad_token_id=int(raw.get("pad_token_id", 0)))
        except KeyError as exc:
            raise ModelLoadError(path, f"model config lacks {exc.args[0]!r}") from None


class BertLayer(nn.Module):
    """Post-norm block: attention + residual + LayerNorm, then GELU MLP + residual + LayerNorm."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        h = c.hidden_size
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(h, 3 * h)  # query, key, value weights fused at load
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.up = nn.Linear(h, c.intermediate_size)
        self.down = nn.Linear(c.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, grid: PaddedGrid) -> Tensor:
        t, h = x.shape
        heads = self.num_heads
        qkv = grid.pad(self.qkv(x))  # [B, L, 3h]
        b, length, _ = qkv.shape
        q, k, v = qkv.view(b, length, 3, heads, h // heads).permute(2, 0, 3, 1, 4)  # each [B, heads, L, d]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=grid.key_mask)
        attn = grid.unpad(attn.transpose(1, 2).reshape(b, length, h))
        x = self.attn_norm(x + self.attn_out(attn))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class PaddedGrid:
    """Maps the packed rows of B sequences to a [B, L] grid and back (identity when all are full)."""

    def __init__(self, lengths: Sequence[int], device: torch.device) -> None:
        self.batch = len(lengths)
        self.length = max(lengths)
        self.full = all(n == self.length for n in lengths)
        self.key_mask: Tensor | None = None
        self.rows: Tensor | None = None
        if not self.full:
            lens = torch.tensor(list(lengths), device=device)
            valid = torch.arange(self.length, device=device)[None, :] < lens[:, None]  # [B, L]
            self.rows = valid.flatten().nonzero().squeeze(1)  # grid cell of each packed row
            self.key_mask = valid[:, None, None, :]  # True: attend; padded keys never are

    def pad(self, x: Tensor) -> Tensor:
        if self.full:
            return x.view(self.batch, self.length, -1)
        grid = x.new_zeros(self.batch * self.length, x.shape[-1])
        grid[self.rows] = x
        return grid.view(self.batch, self.length, -1)

    def unpad(self, x: Tensor) -> Tensor:
        flat = x.reshape(self.batch * self.length, -1)
        return flat if self.full else flat[self.rows]


class BertModel(nn.Module):
    """Token ids -> final hidden states, one row per token of every sequence, packed."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        c = self.config = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embed_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_layers))

    @torch.inference_mode()
    def forward(self, sequences: Sequence[Sequence[int]]) -> tuple[Tensor, list[int]]:
        """Hidden states [sum of lengths, hidden] (float32) and the length of each sequence."""
        lengths = [len(s) for s in sequences]
        ids = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
        positions = torch.cat([torch.arange(n) for n in lengths])
        # Segment 0 for every token: a sentence embedding encodes one text, never a pair.
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.embed_norm(x)
        grid = PaddedGrid(lengths, x.device)
        for layer in self.layers:
            x = layer(x, grid)
        return x, lengths

    @classmethod
    def from_safetensors(cls, config: BertConfig, path: Path) -> BertModel:
        try:
            raw = load_file(str(path))
        except (OSError, ValueError, RuntimeError) as exc:  # safetensors' own error is a ValueError subclass
            raise ModelLoadError(path, f"cannot read the weights: {exc}") from None
        raw = {k.removeprefix("bert."): v.float() for k, v in raw.items()}
        model = cls(config)
        try:
            model.load_state_dict(_remap(raw, config, path))
        except RuntimeError as exc:  # a shape that does not match config.json
            raise ModelLoadError(path, f"weights do not match the config: {exc}") from None
        return model.eval()


_EMBEDDINGS = {"word_embeddings.weight": "embeddings.word_embeddings.weight",
               "position_embeddings.weight": "embeddings.position_embeddings.weight",
               "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
               "embed_norm.weight": "embeddings.LayerNorm.weight", "embed_norm.bias": "embeddings.LayerNorm.bias"}
_LAYER = {"attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
          "up": "intermediate.dense", "down": "output.dense", "out_norm": "output.LayerNorm"}


def _remap(raw: dict[str, Tensor], config: BertConfig, path: Path) -> dict[str, Tensor]:
    """Hugging Face BertModel names -> this module's (q, k, v concatenated into qkv)."""

    def take(name: str) -> Tensor:
        if name not in raw:
            raise ModelLoadError(path, f"weight {name!r} is missing")
        return raw[name]

    state = {ours: take(theirs) for ours, theirs in _EMBEDDINGS.items()}
    for i in range(config.num_layers):
        hf = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            state[f"layers.{i}.qkv.{kind}"] = torch.cat(
                [take(f"{hf}attention.self.{part}.{kind}") for part in ("query", "key", "value")])
            for ours, theirs in _LAYER.items():
                state[f"layers.{i}.{ours}.{kind}"] = take(f"{hf}{theirs}.{kind}")
    return state
