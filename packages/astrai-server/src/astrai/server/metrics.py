"""Prometheus metrics with vLLM's names under an `astrai:` prefix, one registry per app.

Engine-wide numbers (running, waiting, KV usage, token and cache counters) are read from
`engine.stats()` at scrape time; per-request latencies are histograms fed when a request ends.
An engine made of replicas (`ReplicatedEngine`, e.g. `astrai serve --replicas N`) exports the
same families with one sample per replica (label `replica`), as Prometheus users sum them.
Speculative decoding reports vLLM's `spec_decode_*` counters (drafts, draft tokens, accepted
tokens, accepted per position), the acceptance rate, and the suffix store's size and bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from astrai.scheduler import EngineClient, EngineStats, RequestMetrics
from astrai.server.replicated import ReplicatedEngine
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "astrai:"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)

# (engine.stats() key, metric name, help, kind)
_ENGINE_STATS = (
    ("num_running", "num_requests_running", "Requests currently in the running batch.", "gauge"),
    ("num_waiting", "num_requests_waiting", "Requests waiting to be scheduled.", "gauge"),
    ("kv_cache_usage", "kv_cache_usage_perc", "KV-cache usage: 1 means every page is in use.", "gauge"),
    ("prompt_tokens_total", "prompt_tokens", "Prefill tokens processed.", "counter"),
    ("generation_tokens_total", "generation_tokens", "Tokens generated.", "counter"),
    ("prefix_cache_queries", "prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "counter"),
    ("prefix_cache_hits", "prefix_cache_hits", "Prompt tokens found in the prefix cache.", "counter"),
    ("num_preemptions_total", "num_preemptions", "Requests preempted for lack of KV pages.", "counter"),
    ("spec_decode_num_drafts", "spec_decode_num_drafts", "Speculative drafts verified.", "counter"),
    ("spec_decode_num_draft_tokens", "spec_decode_num_draft_tokens", "Speculative draft tokens verified.",
     "counter"),
    ("spec_decode_num_accepted_tokens", "spec_decode_num_accepted_tokens",
     "Speculative draft tokens accepted (equal to the model's own).", "counter"),
    ("spec_decode_suffix_tokens", "spec_decode_suffix_tokens",
     "Tokens of earlier outputs the suffix speculation holds (all tenants).", "gauge"),
    ("spec_decode_suffix_capacity_tokens", "spec_decode_suffix_capacity_tokens",
     "The bound on spec_decode_suffix_tokens (--speculation-suffix-tokens).", "gauge"),
)


class _EngineCollector(Collector):
    def __init__(self, get_engine: Callable[[], EngineClient | None], model_name: str) -> None:
        self._get_engine = get_engine
        self._model_name = model_name

    def collect(self) -> Iterator[Metric]:
        engine = self._get_engine()
        labels = ["model_name"]
        rows: list[tuple[list[str], EngineStats | None]] = [([self._model_name], None)]
        if isinstance(engine, ReplicatedEngine):
            labels.append("replica")
            rows = [([self._model_name, name], stats) for name, stats in engine.replica_stats().items()]
        elif engine is not None:
            rows = [([self._model_name], engine.stats())]
        for key, name, help_text, kind in _ENGINE_STATS:
            family_type = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            family = family_type(PREFIX + name, help_text, labels=labels)
            for values, stats in rows:
                family.add_metric(values, float(stats[key]) if stats is not None else 0.0)  # type: ignore[literal-required]
            yield family
        finished = CounterMetricFamily(PREFIX + "engine_requests_finished", "Requests the engine finished, by "
                                       "finish reason.", labels=[*labels, "finished_reason"])
        for values, stats in rows:
            for reason, count in sorted((stats or {}).get("requests_finished_total", {}).items()):
                finished.add_metric([*values, reason], float(count))
        yield finished
        yield from _speculation_families(rows, labels)
        if isinstance(engine, ReplicatedEngine):
            counts = engine.replica_counts()
            running = GaugeMetricFamily(PREFIX + "replicas_running", "Engine replicas serving now.",
                                        labels=["model_name"])
            running.add_metric([self._model_name], float(counts.running))
            yield running
            retries = CounterMetricFamily(PREFIX + "replica_retries", "Requests sent to another replica "
                                          "because theirs died before they started.", labels=["model_name"])
            retries.add_metric([self._model_name], float(counts.retries_total))
            yield retries


def _speculation_families(rows: list[tuple[list[str], EngineStats | None]], labels: list[str]) -> Iterator[Metric]:
    """vLLM's accepted-tokens-per-position counter, and the acceptance rate since start."""
    per_pos = CounterMetricFamily(PREFIX + "spec_decode_num_accepted_tokens_per_pos", "Speculative drafts "
                                  "whose token at this position was accepted.", labels=[*labels, "position"])
    rate = GaugeMetricFamily(PREFIX + "spec_decode_acceptance_rate", "Accepted / verified speculative draft "
                             "tokens since start (0 before any).", labels=labels)
    for values, stats in rows:
        stats = stats or {}
        for pos, count in sorted(stats.get("spec_decode_num_accepted_tokens_per_pos", {}).items()):
            per_pos.add_metric([*values, str(pos)], float(count))
        drafted = stats.get("spec_decode_num_draft_tokens", 0)
        rate.add_metric(values, stats.get("spec_decode_num_accepted_tokens", 0) / drafted if drafted else 0.0)
    yield per_pos
    yield rate


class ServerMetrics:
    """All metrics of one app, in the app's own registry (several apps may share a process)."""

    def __init__(self, get_engine: Callable[[], EngineClient | None], model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        self.registry.register(_EngineCollector(get_engine, model_name))
        labels = ["model_name"]
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to first token.", labels,
                              buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between output tokens.", labels,
                             buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Arrival to last token.", labels,
                             buckets=_E2E_BUCKETS, registry=self.registry)
        self.queue = Histogram(PREFIX + "request_queue_time_seconds", "Time waiting before first schedule.",
                               labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.success = Counter(PREFIX + "request_success", "Finished requests by finish reason.",
                               ["model_name", "finished_reason"], registry=self.registry)
        for histogram in (self.ttft, self.itl, self.e2e, self.queue):
            histogram.labels(model_name)  # exported (with zero counts) before the first request
        for reason in ("stop", "length", "abort"):
            self.success.labels(model_name, reason)

    def observe(self, metrics: RequestMetrics | None, finish_reason: str | None) -> None:
        """Record one finished request from its `RequestMetrics` (may be None)."""
        name = self.model_name
        self.success.labels(name, finish_reason or "unknown").inc()
        if metrics is None:
            return
        if metrics.ttft is not None:
            self.ttft.labels(name).observe(metrics.ttft)
        for gap in metrics.inter_token_latencies or ():
            self.itl.labels(name).observe(gap)
        if metrics.e2e_latency is not None:
            self.e2e.labels(name).observe(metrics.e2e_latency)
        if metrics.queue_time is not None:
            self.queue.labels(name).observe(metrics.queue_time)

    def render(self) -> bytes:
        return generate_latest(self.registry)
