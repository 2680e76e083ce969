"""The scheduling policy: which requests run this step, and how many tokens each.

Every step packs one ragged batch under a token budget: first one token for every running
request that is decoding, then the next chunk of every running request still in prefill,
then (continuous mode) newly admitted requests while pages and budget last. When a decode
cannot get a page, the lowest-priority, newest running request is preempted by recompute.
Static mode admits a fixed batch only when nothing is running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from astrai.cache import KVCacheManager

from .queue import IndexedHeap
from .request import Request, RequestStatus


@dataclass
class Chunk:
    """Tokens [start, end) of one request computed this step; `sample`: end is the last token.

    A verification chunk ends in `draft`: proposed tokens after the request's last one (so
    `end = start + 1 + len(draft)`), each position sampled; `accepted` is set once verified.
    """

    request: Request
    start: int
    end: int
    sample: bool
    draft: list[int] = field(default_factory=list)
    accepted: int = 0

    @classmethod
    def next(cls, req: Request, num_tokens: int) -> Chunk:
        """The request's next `num_tokens` tokens, from where its cache ends."""
        start = req.num_computed
        end = start + num_tokens
        return cls(req, start, end, end == req.num_tokens)


@dataclass
class StepPlan:
    chunks: list[Chunk] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    failed: list[tuple[Request, str]] = field(default_factory=list)
    admitted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.end - c.start for c in self.chunks)


def _key(req: Request) -> tuple[int, int]:
    return (req.priority, req.arrival_seq)


class Scheduler:
    """Owns the waiting queue and the running set; talks to the KV cache manager."""

    def __init__(
        self,
        kv: KVCacheManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        enable_prefix_cache: bool,
        static: bool = False,
    ) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_prefix_cache = enable_prefix_cache
        self.static = static
        self.waiting: IndexedHeap[Request] = IndexedHeap()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found cached
        self._watermark = max(1, kv.num_pages // 100)

    # --- queue -------------------------------------------------------------------------

    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.push(req.request_id, (req.priority, 1, req.arrival_seq), req)

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def remove(self, request_id: str) -> Request | None:
        """Drop a waiting or running request (abort); its pages are released, not cached."""
        if request_id in self.waiting:
            return self.waiting.remove(request_id)
        for i, req in enumerate(self.running):
            if req.request_id == request_id:
                del self.running[i]
                self.kv.close(request_id)
                return req
        return None

    def release(self, req: Request) -> None:
        """A finished request leaves: its computed full pages go to the prefix cache."""
        self._close(req)
        self.running.remove(req)

    def release_failed(self, req: Request) -> None:
        """A request whose step failed leaves without caching possibly-bad K/V."""
        if req in self.running:
            self.running.remove(req)
            self.kv.close(req.request_id)

    def _close(self, req: Request) -> None:
        if self.enable_prefix_cache and req.num_computed > 0:
            self.kv.close(req.request_id, req.token_slice(0, req.num_computed))
        else:
            self.kv.close(req.request_id)

    # --- one step ----------------------------------------------------------------------

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        self.running.sort(key=_key)
        scheduled: set[str] = set()

        # Decodes first (one token each), then running prefill chunks, both in priority order.
        for decoding in (True, False):
            for req in list(self.running):
                if budget <= 0:
                    break
                if req.status is not RequestStatus.RUNNING or req.request_id in scheduled:
                    continue
                remaining = req.num_tokens - req.num_computed
                if (remaining == 1) != decoding:
                    continue
                n = min(remaining, budget)
                if not self._reserve(req, req.num_computed + n, scheduled, plan):
                    continue
                plan.chunks.append(Chunk.next(req, n))
                scheduled.add(req.request_id)
                budget -= n

        if plan.preempted:
            return plan  # pages are tight: let running requests drain before admitting more
        if self.static:
            if not self.running:
                self._admit_static_batch(plan)
                budget = self._schedule_new_prefills(plan, budget, scheduled)
        else:
            self._admit_continuous(plan, budget, scheduled)
        return plan

    def _reserve(self, req: Request, total: int, scheduled: set[str], plan: StepPlan) -> bool:
        """Reserve pages for `req`, preempting newer unscheduled requests if needed."""
        while not self.kv.reserve(req.request_id, total):
            victim = self._pick_victim(scheduled, exclude=req)
            if victim is None:
                if len(self.running) == 1 and not scheduled:
                    self._fail(req, plan, f"request needs {total} tokens of KV cache but the pool "
                               f"({self.kv.capacity_tokens} tokens) cannot supply them")
                else:
                    self._preempt(req, plan)
                return False
            self._preempt(victim, plan)
        return True

    def reserve_ahead(self, req: Request, end: int, want: int) -> int:
        """Reserve optional positions [end, want) for a running request (speculation), as many
        as free pages allow: never evicting cached pages, never preempting anyone, and keeping
        the watermark free. Returns the new reserved end (`end` if nothing could be added)."""
        kv = self.kv
        spare = kv.num_free_pages() - self._watermark
        if want <= end or spare < 0:
            return end
        have = len(kv.block_table(req.request_id)) * kv.page_size
        target = min(want, have + spare * kv.page_size)
        if target <= end or kv.pages_to_reserve(req.request_id, target) > spare:
            return end
        return target if kv.reserve(req.request_id, target) else end

    def _pick_victim(self, scheduled: set[str], exclude: Request) -> Request | None:
        for req in reversed(self.running):  # sorted: last = lowest priority, newest
            if req is not exclude and req.request_id not in scheduled:
                return req
        return None

    def _preempt(self, req: Request, plan: StepPlan) -> None:
        """Free the request's pages and put it back at the front of the queue."""
        self.running.remove(req)
        self._close(req)
        req.num_computed = 0
        req.num_preemptions += 1
        req.status = RequestStatus.WAITING
        self.num_preemptions += 1
        self.waiting.push(req.request_id, (req.priority, 0, req.arrival_seq), req)
        plan.preempted.append(req)

    def _fail(self, req: Request, plan: StepPlan, message: str) -> None:
        if req in self.running:
            self.running.remove(req)
        self.kv.close(req.request_id)
        plan.failed.append((req, message))

    # --- admission ---------------------------------------------------------------------

    def _pages(self, tokens: int) -> int:
        return -(-tokens // self.kv.page_size)

    def _available_pages(self) -> int:
        return self.kv.num_free_pages() + self.kv.num_evictable_pages()

    def _open(self, req: Request) -> None:
        """Register the request with the cache; its cached prefix counts as computed.

        A request scoring its prompt (prompt_logprobs) needs logits at every prompt position,
        so it matches nothing: opening it with its first token alone finds no cached prefix.
        """
        tokens = req.all_token_ids()
        if req.prompt_logprobs is not None:
            tokens = tokens[:1]
        req.num_computed = self.kv.open(req.request_id, tokens)

    def _start(self, req: Request, plan: StepPlan) -> None:
        self.waiting.remove(req.request_id)
        req.status = RequestStatus.RUNNING
        if req.num_preemptions == 0:
            req.num_cached_tokens = req.num_computed
            self.prefix_queries += req.num_tokens
            self.prefix_hits += req.num_computed
        self.running.append(req)
        plan.admitted.append(req)

    def _admit_continuous(self, plan: StepPlan, budget: int, scheduled: set[str]) -> None:
        """Admit waiting requests in priority order while the batch, the budget and memory allow.

        Each candidate is first looked up without side effects; only a request that is admitted
        is opened (which locks its cached prefix and counts it for recency and frequency), so a
        request that waits many steps for memory is counted once, not once per step.
        """
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting.peek()
            if self.enable_prefix_cache and req.follows is not None and not req.follows.prompt_done:
                break  # an n > 1 sibling: wait one prefill, then share the prompt's pages from the cache
            fits_plainly = self._available_pages() - self._pages(req.num_tokens) >= self._watermark
            if not fits_plainly and not self.kv.lookup(req.all_token_ids(), req.num_tokens).fits:
                if not self.running and not plan.chunks:  # nothing will ever free more pages
                    self.waiting.remove(req.request_id)
                    plan.failed.append((req, f"request needs {req.num_tokens} tokens of KV cache but the "
                                        f"pool holds only {self.kv.capacity_tokens}"))
                    continue
                break
            self._open(req)
            n = min(req.num_tokens - req.num_computed, budget)
            if not self.kv.reserve(req.request_id, req.num_computed + n):  # the lookup said it fits
                self.kv.close(req.request_id)
                break
            self._start(req, plan)
            plan.chunks.append(Chunk.next(req, n))
            scheduled.add(req.request_id)
            budget -= n

    def _admit_static_batch(self, plan: StepPlan) -> None:
        """A fixed batch in arrival order whose whole prompts and outputs fit the pool."""
        available = self._available_pages()
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting.peek()
            need = self._pages(len(req.prompt_token_ids) + req.max_tokens)
            if need > available and self.running:
                break
            if need > self.kv.num_pages:
                self.waiting.remove(req.request_id)
                plan.failed.append((req, f"request needs {need} KV pages but the pool has {self.kv.num_pages}"))
                continue
            available -= need
            self._open(req)
            self._start(req, plan)

    def _schedule_new_prefills(self, plan: StepPlan, budget: int, scheduled: set[str]) -> int:
        for req in plan.admitted:
            if budget <= 0:
                break
            n = min(req.num_tokens - req.num_computed, budget)
            if not self.kv.reserve(req.request_id, req.num_computed + n):
                break
            plan.chunks.append(Chunk.next(req, n))
            scheduled.add(req.request_id)
            budget -= n
        return budget
