"""What travels between the front end and the engine replicas (pickled by Ray as it is).

Requests carry the engine's own `SamplingParams` and come back as the engine's own
`RequestOutput` deltas, so any field added to them reaches every replica unchanged. Routing
hints ride along as keyword arguments the replica ignores and the router reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import EngineInfo, EngineStats, ModelConfig, Tokenizer

# Keyword arguments of replica calls that only the router reads.
PIN = "astrai_replica"  # run on exactly this replica (health, stats): no other
AVOID = "astrai_avoid"  # prefer any replica but these (a retry after a replica died)


@dataclass(frozen=True)
class ReplicaTag:
    """The first item of every generation stream: who is serving it."""

    replica: str  # Ray Serve's replica id (unique within the deployment)
    pid: int
    node_id: str


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica's answer to a status call: identity, engine stats, and whether its engine runs."""

    replica: str
    pid: int
    node_id: str
    engine_alive: bool
    stats: EngineStats


@dataclass(frozen=True)
class EngineSpec:
    """How each replica builds its engine: the model and `Engine.from_pretrained` keyword arguments.

    `kv_budget_bytes` sizes the KV pool when `engine_kwargs` has no `num_pages`: the front end
    splits one machine's budget between the replicas that share it.
    """

    model: str
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    kv_budget_bytes: int | None = None


@dataclass(frozen=True)
class EngineDescription:
    """What the front end needs to tokenize, validate and describe, fetched once from a replica."""

    tokenizer: Tokenizer
    config: ModelConfig
    info: EngineInfo
