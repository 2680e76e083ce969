"""A request's lifetime state: tokens, progress through the KV cache, text and stop checks."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

import torch
from astrai.model import IncrementalDetokenizer

from .grammar import TokenConstraint
from .outputs import RequestMetrics, RequestOutput
from .params import SamplingParams
from .stop import StopMatcher

Sink = Callable[[RequestOutput], None]


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Request:
    """One generation request as the engine thread sees it.

    `num_computed` counts the tokens (prompt + output) whose K/V are in the cache; the tokens
    from there to the end are what the next step must feed the model. A preempted request
    keeps its output tokens and resumes by recomputing the cache; its random numbers are keyed
    by output position (`random_key`), so there is no generator state to keep.
    """

    grammar_bitmask: torch.Tensor | None = None  # a live request's grammar is masked by the sampler

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        max_tokens: int,
        eos_token_ids: list[int],
        priority: int = 0,
        arrival_seq: int = 0,
        sink: Sink | None = None,
        stream: bool = False,
        detokenizer: IncrementalDetokenizer | None = None,
        constraint: TokenConstraint | None = None,
        index: int = 0,
        follows: Request | None = None,
        sample_seed: int = 0,
    ) -> None:
        self.request_id = request_id
        self.index = index  # which of the n samples of one prompt this is
        self.follows = follows  # a sibling whose prompt prefill this one waits for (to share its pages)
        self.constraint = constraint  # the structured-output grammar state, if any
        self.prompt_token_ids = prompt_token_ids
        self.output_token_ids: list[int] = []
        self.params = params
        self.max_tokens = max_tokens
        self.priority = priority
        self.arrival_seq = arrival_seq
        self.sink = sink
        self.stream = stream
        self.status = RequestStatus.WAITING
        self.num_computed = 0
        self.num_cached_tokens = 0
        self.num_preemptions = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.error: str | None = None
        # The seed of this request's random numbers: params.seed, or one the engine drew for it.
        self.sample_seed = params.seed if params.seed is not None else sample_seed
        self.metrics = RequestMetrics(arrival_time=time.monotonic(), num_prompt_tokens=len(prompt_token_ids))
        self._stop_ids = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            self._stop_ids.update(eos_token_ids)
        self._banned = sorted(self._stop_ids) if params.min_tokens > 0 else []
        self._detok = detokenizer  # None: decode once at the end (no streaming, no stop strings)
        self._stop = StopMatcher(params.stop_strings)
        self.text = ""  # text released so far (final text once finished)
        self._delta_text = ""
        self._delta_start = 0  # index into output_token_ids where the pending delta begins
        self._delta_logprobs: list[dict[str, Any]] | None = [] if params.logprobs is not None else None
        self._all_logprobs: list[dict[str, Any]] | None = [] if params.logprobs is not None else None
        self._last_token_time: float | None = None
        # Prompt logprobs: entry t scores prompt token t (the first has no context: None).
        self.prompt_logprobs: list[dict[str, Any] | None] | None = (
            [None] if params.prompt_logprobs is not None else None)
        self._prompt_logprobs_sent = False

    # --- token bookkeeping -------------------------------------------------------------

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_slice(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output without building the whole list."""
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p : end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - p]

    @property
    def random_key(self) -> tuple[int, int, int]:
        """What the next token's random number is drawn from: (seed, choice index, output position)."""
        return self.sample_seed, self.index, len(self.output_token_ids)

    @property
    def tokens_left(self) -> int:
        """Tokens this request may still generate (including the one being sampled now)."""
        return self.max_tokens - len(self.output_token_ids)

    @property
    def prompt_done(self) -> bool:
        """The whole prompt's K/V are computed (siblings waiting on this one may start)."""
        return self.finished or self.num_computed >= len(self.prompt_token_ids)

    def banned_token_ids(self, ahead: int = 0) -> list[int]:
        """Stop tokens are masked until min_tokens have been generated (`ahead`: for the position
        that many tokens after the next one, as a verified draft position needs)."""
        if self._banned and len(self.output_token_ids) + ahead < self.params.min_tokens:
            return self._banned
        return []

    def append_token(self, token_id: int, logprob: dict[str, Any] | None, now: float) -> None:
        """Record a sampled token, update text, and decide whether the request is done."""
        self.output_token_ids.append(token_id)
        m = self.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        elif self._last_token_time is not None:
            m.inter_token_latencies.append(now - self._last_token_time)
        self._last_token_time = now
        if logprob is not None and self._delta_logprobs is not None:
            self._delta_logprobs.append(logprob)
            self._all_logprobs.append(logprob)  # type: ignore[union-attr]
        n_out = len(self.output_token_ids)
        past_min = n_out >= self.params.min_tokens
        if token_id in self._stop_ids and past_min:
            self.stop_reason = token_id
            self._finish_text()
            self.finish("stop")
            return
        grammar_done = self.constraint is not None and self._advance_constraint(token_id)
        if self._detok is not None:
            piece = self._detok.push(token_id)
            if past_min:
                emit, matched = self._stop.push(piece)
                self._release(emit)
                if matched is not None:
                    self.stop_reason = matched
                    self.finish("stop")
                    return
            else:
                self._release(piece)
        if grammar_done:  # the structured output is complete: nothing else may follow
            self._finish_text()
            self.finish("stop")
        elif n_out >= self.max_tokens:
            self._finish_text()
            self.finish("length")

    def _advance_constraint(self, token_id: int) -> bool:
        """Feed the grammar; True once the output is complete."""
        assert self.constraint is not None
        self.constraint.accept(token_id)
        return self.constraint.is_finished

    def _release(self, text: str) -> None:
        if text:
            self.text += text
            self._delta_text += text

    def _finish_text(self) -> None:
        """Flush held text at a non-stop-string finish."""
        if self._detok is not None:
            tail = self._detok.flush()
            emit, matched = self._stop.push(tail) if tail else ("", None)
            self._release(emit if matched is not None else emit + self._stop.flush())

    def finish(self, reason: str, error: str | None = None) -> None:
        self.status = RequestStatus.FINISHED
        self.finish_reason = reason
        self.error = error
        self.metrics.finished_time = time.monotonic()
        self.metrics.num_generation_tokens = len(self.output_token_ids)
        self.metrics.num_cached_tokens = self.num_cached_tokens

    # --- outputs ---------------------------------------------------------------------

    def set_final_text(self, text: str) -> None:
        """Text decoded once at the end (requests without an incremental detokenizer)."""
        self.text = text
        self._delta_text = text

    @property
    def uses_detokenizer(self) -> bool:
        return self._detok is not None

    def take_delta(self) -> RequestOutput:
        """The news since the previous delta (streaming)."""
        ids = self.output_token_ids[self._delta_start :]
        self._delta_start = len(self.output_token_ids)
        text, self._delta_text = self._delta_text, ""
        lps = None
        if self._delta_logprobs is not None:
            lps, self._delta_logprobs = self._delta_logprobs, []
        out = self._output(text, ids, lps)
        if self.prompt_logprobs is not None and not self._prompt_logprobs_sent and (ids or self.finished):
            out.prompt_logprobs = self.prompt_logprobs  # once, with the first delta after the prompt
            self._prompt_logprobs_sent = True
        return out

    def final_output(self) -> RequestOutput:
        """The whole result in one output (non-streaming)."""
        out = self._output(self.text, list(self.output_token_ids), self._all_logprobs)
        out.prompt_logprobs = self.prompt_logprobs
        return out

    def _output(self, text: str, ids: list[int], lps: list[dict[str, Any]] | None) -> RequestOutput:
        done = self.finished
        return RequestOutput(
            request_id=self.request_id,
            index=self.index,
            text=text,
            token_ids=ids,
            finished=done,
            finish_reason=self.finish_reason if done else None,
            prompt_token_ids=self.prompt_token_ids,
            num_cached_tokens=self.num_cached_tokens,
            logprobs=lps,
            error=self.error,
            metrics=self.metrics if done else None,
            stop_reason=self.stop_reason if done else None,
        )
