"""The systems under test. Each exposes the same small surface:

`offline(requests, progress_desc) -> OfflineResult` and
`latency(prompt_ids, decode_tokens) -> LatencyResult`, plus `close()`.
"""

from bench.systems.base import LatencyResult, OfflineResult, System

__all__ = ["LatencyResult", "OfflineResult", "System"]
