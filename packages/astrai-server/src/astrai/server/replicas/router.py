"""The prefix-aware Ray Serve request router for the engine deployment.

Ray Serve builds one router per deployment handle, in the process that holds the handle (the
`astrai serve` front end, or the ingress replica under `serve run`), and asks it to rank the
live replicas for each call. This one ranks by `AffinityPolicy`: first the replica the rule
picks, then the rest by load. Ray keeps the rest of the job: the replica set as the controller
reports it, dropping dead replicas at once, queue-length probes, and falling through to the
next rank when a replica is full (`max_ongoing_requests`).

Load is the requests this router has in flight per replica, or Ray's cached queue length where
that is higher (it also counts other front ends' requests). Calls pinned to one replica
(`wire.PIN`) go there and nowhere else; `wire.AVOID` sends a retry away from a replica that
just died, before the controller has noticed.

Ray Serve pickles this module by value into the handle's process: it keeps no shared state of
its own and publishes the live replica set to `board` for the front end there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from astrai.server.replicas.affinity import AffinityPolicy, AffinityRule
from astrai.server.replicas.board import ReplicaRef, publish
from astrai.server.replicas.wire import AVOID, PIN
from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

GENERATE_METHOD = "generate"


def prompt_tokens(request: PendingRequest | None) -> Sequence[int] | None:
    """The prompt token ids of a generation call (its first argument), else None."""
    if request is None or request.metadata.call_method != GENERATE_METHOD or not request.args:
        return None
    prompt = request.args[0]
    if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt[:8]):
        return prompt
    return None


class PrefixAwareRouter(RequestRouter):
    """Ray Serve's `RequestRouter` extension point, with the affinity rule as its policy
    (or, as the baseline it is measured against, plain round-robin)."""

    def initialize_state(self, block_size: int = 16, min_match_tokens: int = 32, load_slack: int = 4,
                         max_entries: int = 200_000, routing: str = "prefix") -> None:
        if routing not in ("prefix", "round-robin"):
            raise ValueError(f"routing must be 'prefix' or 'round-robin', got {routing!r}")
        self.policy = AffinityPolicy(AffinityRule(block_size=block_size, min_match_tokens=min_match_tokens,
                                                  load_slack=load_slack, max_entries=max_entries))
        self.round_robin = routing == "round-robin"
        self._turn = itertools.count()
        self._in_flight: dict[ReplicaID, set[str]] = {}
        self.snapshot: tuple[ReplicaRef, ...] = ()
        self._publish()

    def load(self, replica: RunningReplica) -> int:
        mine = len(self._in_flight.get(replica.replica_id, ()))
        cached = self.replica_queue_len_cache.get(replica.replica_id)
        return max(mine, cached or 0)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if pending_request is not None:
            # No rank accepted: let Ray back off before it asks again, instead of spinning.
            pending_request.routing_context.should_backoff = True
        if not candidate_replicas:
            return []
        kwargs = pending_request.kwargs if pending_request is not None else {}
        pinned = kwargs.get(PIN)
        if pinned is not None:
            return [[r for r in candidate_replicas if r.replica_id.unique_id == pinned]]
        avoid = set(kwargs.get(AVOID) or ())
        pool = [r for r in candidate_replicas if r.replica_id.unique_id not in avoid] or candidate_replicas
        loads = {r.replica_id: self.load(r) for r in pool}
        if self.round_robin:  # the baseline: replicas in turn, blind to prefixes and load
            order = sorted(loads, key=lambda rid: rid.unique_id)
            chosen = order[next(self._turn) % len(order)]
        else:
            chosen = self.policy.choose(prompt_tokens(pending_request), loads)
        by_id = {r.replica_id: r for r in pool}
        rest = sorted((r for r in pool if r.replica_id != chosen), key=lambda r: loads[r.replica_id])
        return [[by_id[chosen]], rest]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        self._in_flight.setdefault(replica_id, set()).add(pending_request.metadata.internal_request_id)
        self.policy.record(replica_id, prompt_tokens(pending_request))

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._in_flight.get(replica_id, set()).discard(internal_request_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._refresh()

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._refresh()

    def _refresh(self) -> None:
        live = dict(self.curr_replicas)
        keep = set(live)
        for gone in set(self._in_flight) - keep:
            del self._in_flight[gone]
        snapshot = tuple(ReplicaRef(r.replica_id.unique_id, r.node_id) for r in live.values())
        if set(self.snapshot) - set(snapshot):
            self.policy.index.forget(keep)  # a replica went away: what it cached went with it
        self.snapshot = snapshot
        self._publish()

    def _publish(self) -> None:
        publish(self._deployment_id.app_name, self._deployment_id.name, self.snapshot)
