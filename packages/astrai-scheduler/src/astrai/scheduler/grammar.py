"""Constrained decoding with llguidance: compile a constraint once, mask tokens per row.

Why llguidance (not xgrammar): a 3 MB abi3 wheel with no dependencies (xgrammar pulls
transformers, apache-tvm-ffi and a 286 MB triton wheel), a tokenizer built straight from our
`tokenizers` JSON (HF and GGUF vocabularies alike), about 1.5 ms to compile a nested JSON
schema on the 49k SmolLM2 vocabulary (xgrammar: 30 ms) and masks in tens of microseconds.

A token mask alone cannot promise a parseable answer: a small model sampling hot can write a
string until `max_tokens` runs out. So each constraint also knows how to *finish*: it walks a
copy of its matcher with a closing policy (end of sequence, close the open string, close
brackets, the shortest allowed token otherwise) to measure the shortest way to a complete
output, and when the tokens left barely cover that, it stops sampling and writes it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from .structured import StructuredOutputsParams

log = logging.getLogger("astrai.scheduler")

CACHE_SIZE = 128
MAX_CLOSE_STEPS = 256  # a closing walk longer than this is treated as "cannot finish"
CHECK_EVERY = 8  # tokens between closing checks while the budget is still far away
PARALLEL_FROM = 16  # rows from which llguidance's thread pool computes the masks (its threads spin a while)
THREADS_ENV = "ASTRAI_GRAMMAR_THREADS"  # overrides the mask pool's size (default: the CPUs this process may use)


class GrammarError(ValueError):
    """A constraint the grammar engine cannot compile; the message names the problem.

    `field` is the `structured_outputs` field compiled (None: not about one field) and `detail`
    the message without it, for front ends that name the field their own way (e.g.
    `response_format`); `str()` is "<field>: <detail>".
    """

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail = detail
        self.field = field


class GrammarUnavailableError(GrammarError):
    """The llguidance package is not installed."""


def grammar_threads() -> int:
    """Threads of llguidance's mask pool: `ASTRAI_GRAMMAR_THREADS` if set, else the CPUs this
    process may run on (its affinity, so a replica pinned to two cores does not spin sixteen)."""
    setting = os.environ.get(THREADS_ENV, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {setting!r}")
        return int(setting)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:  # pragma: no cover - it is a dependency; kept for trimmed installs
        raise GrammarUnavailableError(
            "structured outputs need the llguidance package (pip install llguidance)") from None
    return llguidance


class GrammarCompiler:
    """Builds `TokenConstraint`s for one tokenizer; thread-safe, compiled grammars cached (LRU)."""

    def __init__(self, tokenizer: Any, vocab_size: int, threads: int | None = None) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.threads = grammar_threads() if threads is None else threads
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._ranks: _ClosingRanks | None = None
        self._executor: Any = None

    def _tokenizer_info(self) -> Any:
        if self._ll_tokenizer is None:
            ll = _llguidance()
            backend = getattr(self._tokenizer, "backend", None)
            if backend is None:
                raise GrammarError("structured outputs need a tokenizer backed by the `tokenizers` library")
            self._ll_tokenizer = ll.LLTokenizer(backend.to_str(), n_vocab=self.vocab_size,
                                                eos_token=list(self._tokenizer.eos_token_ids))
            self._ranks = _ClosingRanks(self._ll_tokenizer, self.vocab_size)
            self._executor = ll.LLExecutor(num_threads=self.threads)
        return self._ll_tokenizer

    def compile(self, spec: StructuredOutputsParams) -> TokenConstraint:
        """A fresh constraint for one request; raises GrammarError naming what is wrong."""
        key = spec.cache_key()
        with self._lock:
            lltok = self._tokenizer_info()
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
        if template is None:
            template = self._build(spec, lltok)
            with self._lock:
                self._cache[key] = template
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        assert self._ranks is not None
        return TokenConstraint(template.deep_copy(), self._ranks, self._executor)

    def _build(self, spec: StructuredOutputsParams, lltok: Any) -> Any:
        ll = _llguidance()
        matcher_cls = ll.LLMatcher
        kind = spec.kind
        where = f"structured_outputs.{kind}"
        try:
            if kind in ("json", "json_object"):
                schema: Any = {"type": "object"} if kind == "json_object" else spec.json
                if isinstance(schema, str):
                    try:
                        schema = json.loads(schema)
                    except ValueError as exc:
                        raise GrammarError(f"the schema is not valid JSON: {exc}", where) from None
                options: dict[str, Any] = {"whitespace_flexible": False}
                if spec.whitespace_pattern is not None:
                    options = {"whitespace_pattern": spec.whitespace_pattern}
                grammar = matcher_cls.grammar_from_json_schema(schema, defaults=options)
            elif kind == "regex":
                grammar = matcher_cls.grammar_from_regex(spec.regex)
            elif kind == "choice":
                grammar = ll.grammar_from("choice", json.dumps(list(spec.choice or ())))
            else:
                grammar = ll.grammar_from("grammar", spec.grammar)
        except GrammarError:
            raise
        except (ValueError, TypeError, RuntimeError) as exc:
            raise GrammarError(str(exc), where) from None
        is_error, messages = matcher_cls.validate_grammar_with_warnings(grammar, lltok)
        if is_error:
            raise GrammarError(f"cannot compile: {_first_line(messages)}", where)
        matcher = matcher_cls(lltok, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"cannot compile: {_first_line([matcher.get_error()])}", where)
        return matcher


def _first_line(messages: Sequence[str]) -> str:
    text = (messages[0] if messages else "unknown error").strip()
    return text.splitlines()[0][:500] if text else "unknown error"


class _ClosingRanks:
    """Token preferences for finishing an output quickly, computed once per tokenizer.

    Lower rank wins. Outside a JSON string: end of sequence, then tokens made only of `}`/`]`
    (longest first), `,` (so a number stops growing), a lone `0`, `"`, then the shortest token.
    Inside a string: `"` first.
    """

    def __init__(self, lltok: Any, vocab_size: int) -> None:
        outside = torch.full((vocab_size,), 1 << 20, dtype=torch.long)
        inside = outside.clone()
        for tid in range(min(vocab_size, lltok.vocab_size)):
            raw = lltok.decode_bytes([tid])
            if not raw or lltok.is_special_token(tid):
                continue
            length = len(raw)
            base = 1000 + length * 10
            outside[tid] = inside[tid] = base
            if raw == b'"':
                inside[tid] = 1
                outside[tid] = 40
            if all(b in b"}]" for b in raw):
                outside[tid] = 10 - min(length, 9)
            elif raw == b",":  # ends a number or value; the grammar allows it only where it is needed
                outside[tid] = 20
            elif raw == b"0":
                outside[tid] = 30
        for eos in lltok.eos_tokens:
            if 0 <= eos < vocab_size:
                outside[eos] = inside[eos] = 0
        ids = torch.arange(vocab_size, dtype=torch.long)
        # Ties broken by token id; sort once, then "first allowed in this order" is the choice.
        self.outside_order = torch.argsort(outside * vocab_size + ids)
        self.inside_order = torch.argsort(inside * vocab_size + ids)
        self.decode = lltok.decode_bytes
        self.eos = set(lltok.eos_tokens)


class TokenConstraint:
    """One request's grammar state: masks for the sampler, tokens fed back, and the finish plan."""

    def __init__(self, matcher: Any, ranks: _ClosingRanks, executor: Any) -> None:
        self.matcher = matcher
        self._ranks = ranks
        self.executor = executor
        self.closing = False  # writing the shortest completion instead of sampling
        self._in_string = False
        self._escaped = False
        self._next_check = 0  # generated-token count at which the finish plan is next measured
        self._generated = 0

    # --- what the engine calls ----------------------------------------------------------

    def prepare(self, tokens_left: int) -> None:
        """Before this step's mask: switch to closing when the budget only just covers it."""
        if self.closing or self._generated < self._next_check:
            return
        need = self.closing_length()
        if need is None:  # cannot finish from here within the walk's limit: keep sampling
            self._next_check = self._generated + CHECK_EVERY
            return
        margin = 4 + need // 4
        if tokens_left <= need + margin:
            self.closing = True
            return
        slack = tokens_left - (need + margin)
        self._next_check = self._generated + max(1, min(CHECK_EVERY, slack // 4))

    def accept(self, token_id: int) -> bool:
        """Feed the sampled token; False if the grammar rejected it (a bug, logged)."""
        self._generated += 1
        ok = bool(self.matcher.consume_token(token_id))
        if not ok:
            log.warning("grammar rejected token %d: %s", token_id, self.matcher.get_error())
        self._track(self._ranks.decode([token_id]))
        return ok

    def draft_masks(self, draft: Sequence[int], tokens_left: int) -> torch.Tensor:
        """The masks decoding `draft` token by token would compute: row j for the position after
        draft[:j] (int32 words, [len(draft) + 1, words]); the constraint is left as it was.

        The matcher is advanced through the draft and rolled back; once a draft token is not
        allowed, the rows after it are all-allowed (those positions can never be accepted).
        """
        words = (self._ranks.outside_order.numel() + 31) // 32
        masks = torch.full((len(draft) + 1, words), -1, dtype=torch.int32)
        saved = (self.closing, self._in_string, self._escaped, self._next_check, self._generated)
        consumed = 0
        for j in range(len(draft) + 1):
            self.prepare(tokens_left - j)
            masks[j].zero_()
            self.fill_bitmask(masks[j])
            if j == len(draft) or self.matcher.is_stopped():
                break
            token = draft[j]
            if not int(masks[j, token // 32]) >> (token % 32) & 1 or not self.accept(token):
                break
            consumed += 1
        if consumed:
            self.matcher.rollback(consumed)
        self.closing, self._in_string, self._escaped, self._next_check, self._generated = saved
        return masks

    @property
    def is_finished(self) -> bool:
        """The output is complete and nothing but end-of-sequence may follow."""
        return bool(self.matcher.is_stopped())

    @property
    def is_accepting(self) -> bool:
        return bool(self.matcher.is_accepting())

    # --- masks -------------------------------------------------------------------------

    def fill_bitmask(self, row: torch.Tensor) -> None:
        """Write the allowed-token bitmask (int32 words, bit i of word w = token 32w+i)."""
        self.matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
        if self.closing:
            choice = self._closing_choice(row, self._in_string)
            row.zero_()
            if choice is not None:
                row[choice // 32] = _bit(choice % 32)

    def closing_length(self) -> int | None:
        """Tokens the closing policy needs from here to a complete output (None: not within the limit)."""
        if self.matcher.is_stopped():
            return 0
        probe = self.matcher.deep_copy()
        in_string, escaped = self._in_string, self._escaped
        words = (self._ranks.outside_order.numel() + 31) // 32
        row = torch.zeros(words, dtype=torch.int32)
        for steps in range(1, MAX_CLOSE_STEPS + 1):
            probe.unsafe_compute_mask_ptr(row.data_ptr(), words * 4)
            choice = self._closing_choice(row, in_string)
            if choice is None:
                return None
            if choice in self._ranks.eos:
                return steps
            if not probe.consume_token(choice):
                return None
            if probe.is_stopped():
                return steps
            in_string, escaped = _scan_string_state(self._ranks.decode([choice]), in_string, escaped)
        return None

    def _closing_choice(self, row: torch.Tensor, in_string: bool) -> int | None:
        allowed = unpack_bitmask(row.unsqueeze(0), self._ranks.outside_order.numel())[0]
        order = self._ranks.inside_order if in_string else self._ranks.outside_order
        hits = allowed[order].nonzero()
        return int(order[hits[0, 0]]) if hits.numel() else None

    def _track(self, raw: bytes) -> None:
        self._in_string, self._escaped = _scan_string_state(raw, self._in_string, self._escaped)


def _scan_string_state(raw: bytes, in_string: bool, escaped: bool) -> tuple[bool, bool]:
    """Whether the text so far ends inside a JSON string (quotes and backslash escapes)."""
    for b in raw:
        if escaped:
            escaped = False
        elif in_string and b == 0x5C:
            escaped = True
        elif b == 0x22:
            in_string = not in_string
    return in_string, escaped


def _bit(i: int) -> int:
    """Bit i of a signed int32 word."""
    return (1 << i) if i < 31 else -(1 << 31)


_SHIFTS = torch.arange(32, dtype=torch.int32)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[R, words] int32 -> [R, vocab_size] bool (True = allowed)."""
    bits = (bitmask.unsqueeze(-1) >> _SHIFTS) & 1
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()


def fill_bitmasks(constraints: Sequence[TokenConstraint], vocab_size: int) -> torch.Tensor:
    """Masks for many rows at once; sampling rows go through llguidance's parallel executor."""
    words = (vocab_size + 31) // 32
    bitmask = torch.zeros((len(constraints), words), dtype=torch.int32)
    if len(constraints) >= PARALLEL_FROM:
        rows = [(c.matcher, i) for i, c in enumerate(constraints) if not c.closing]
        if rows:
            constraints[0].executor.unsafe_compute_mask_ptr(rows, bitmask.data_ptr(), words * 4, len(constraints))
    for i, c in enumerate(constraints):
        if c.closing or len(constraints) < PARALLEL_FROM:
            c.fill_bitmask(bitmask[i])
    return bitmask
