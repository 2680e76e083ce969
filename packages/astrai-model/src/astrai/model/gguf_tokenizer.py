"""Tokenizers built from a GGUF file's own vocabulary (`tokenizer.ggml.*`), on `tokenizers`.

Two kinds, as llama.cpp reads them:

- "gpt2": byte-level BPE with the file's merges and its pre-tokenizer split pattern.
- "llama" (SentencePiece BPE, e.g. Gemma, Llama 2): llama.cpp's SPM tokenizer. Spaces become
  "▁" (after a "▁" prefix when `add_space_prefix`), then adjacent symbols merge, best first,
  whenever their concatenation is a vocabulary token, "best" being that token's score. That is a
  BPE whose merges are every split (a, b) of every token t with a and b tokens too, ranked by
  t's score. Characters that end up in no token fall back to their `<0xNN>` byte tokens.

In both, control, unknown and user-defined tokens are split out of the text first (user-defined
ones like Gemma's "\\n\\n" or "<td>" included), longest match first, and encoded as themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer

from .errors import ModelLoadError
from .tokenizer import Tokenizer

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁", SentencePiece's visible space

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
SUPPORTED_MODELS = ("gpt2 (byte-level BPE)", "llama (SentencePiece BPE)")
# llama.cpp's special ids for a SentencePiece vocabulary whose file names none
SPM_SPECIAL_IDS = {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
                   "tokenizer.ggml.unknown_token_id": 0}


def gguf_tokenizer(metadata: Mapping[str, Any], source: str, eos_token_ids: list[int]) -> Tokenizer:
    """The file's tokenizer; `ModelLoadError` for a kind llama.cpp has that this does not."""
    kind = metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in metadata:
        raise ModelLoadError(source, "the file has no tokenizer (tokenizer.ggml.tokens is missing)")
    tokens = [str(t) for t in metadata["tokenizer.ggml.tokens"]]
    types = list(metadata.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens)))
    if len(types) != len(tokens):
        raise ModelLoadError(source, f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    if kind == "gpt2":
        backend = _byte_level_bpe(metadata, tokens, types)
    elif kind == "llama":
        backend = _sentencepiece_bpe(metadata, tokens, types, source)
    else:
        raise ModelLoadError(source, f"unsupported GGUF tokenizer model {kind!r} (supported: {', '.join(SUPPORTED_MODELS)})")

    defaults = SPM_SPECIAL_IDS if kind == "llama" else {}

    def token_at(key: str) -> str | None:
        index = metadata.get(key, defaults.get(key))
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    return Tokenizer(
        backend,
        bos_token=token_at("tokenizer.ggml.bos_token_id"),
        eos_token=token_at("tokenizer.ggml.eos_token_id"),
        eos_token_ids=eos_token_ids,
        chat_template=metadata.get("tokenizer.chat_template"),
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        special_tokens={
            "unk_token": token_at("tokenizer.ggml.unknown_token_id"),
            "pad_token": token_at("tokenizer.ggml.padding_token_id"),
        },
    )


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


def _byte_level_bpe(metadata: Mapping[str, Any], tokens: list[str], types: list[int]) -> BackendTokenizer:
    merges = [tuple(str(m).split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    alphabet = _byte_alphabet()
    letters = set(alphabet.values())
    spelled = [t if set(t) <= letters else "".join(alphabet[b] for b in t.encode()) for t in tokens]
    vocab = {token: i for i, token in enumerate(spelled)}
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pattern = SPLIT_PATTERNS.get(str(metadata.get("tokenizer.ggml.pre", "default")))
    if pattern is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    backend.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types, strict=True) if kind == CONTROL and set(t) <= letters]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, kind in zip(tokens, types, strict=True) if kind == USER_DEFINED]
    if user:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return backend


def _sentencepiece_bpe(metadata: Mapping[str, Any], tokens: list[str], types: list[int], source: str) -> BackendTokenizer:
    scores = list(metadata.get("tokenizer.ggml.scores", []))
    if len(scores) != len(tokens):
        raise ModelLoadError(source, f"tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab[token or f"[EMPTY_{i}]"] = i  # llama.cpp's name for an empty token; a repeat: the last id wins
    if len(vocab) != len(tokens):
        raise ModelLoadError(source, "the vocabulary lists a token twice")
    unknown = metadata.get("tokenizer.ggml.unknown_token_id", SPM_SPECIAL_IDS["tokenizer.ggml.unknown_token_id"])
    backend = BackendTokenizer(models.BPE(
        vocab=vocab, merges=spm_merges(tokens, scores, vocab), byte_fallback=True, fuse_unk=False,
        unk_token=tokens[int(unknown)] if unknown is not None and 0 <= int(unknown) < len(tokens) else None,
    ))
    add_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    replace = normalizers.Replace(" ", SPACE)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), replace]) if add_prefix else replace
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(steps)
    # Split out as themselves, before any merging: what llama.cpp's tokenizer_st_partition does.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types, strict=True) if kind in (CONTROL, UNKNOWN) and t])
    user = [AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, types, strict=True) if kind == USER_DEFINED and t]
    if user:
        backend.add_tokens(user)
    return backend


def spm_merges(tokens: list[str], scores: list[float], vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    """Every split (a, b) of every token whose halves are tokens too, best-scored result first
    (equal scores: lower token id first)."""
    ranked: list[tuple[float, int, str, str]] = []
    for index, token in enumerate(tokens):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[index]), index, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]
