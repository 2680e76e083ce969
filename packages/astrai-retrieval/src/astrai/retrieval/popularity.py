"""How often each passage was retrieved lately: a count-min sketch (astrai.cache's, with
periodic halving, so popularity fades) keyed by a stable 64-bit hash of the passage id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from astrai.cache import CountMinSketch


def passage_key(passage_id: str) -> int:
    """A 64-bit key that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(passage_id.encode(), digest_size=8).digest(), "little")


class PassagePopularity:
    """Approximate recent retrieval counts per passage id (saturating at `max_count`)."""

    def __init__(self, width: int = 1 << 16, *, max_count: int = 255, sample_size: int | None = None) -> None:
        self.sketch = CountMinSketch(width, max_count=max_count, sample_size=sample_size)

    def record(self, passage_ids: Iterable[str]) -> None:
        """Count one retrieval of each passage."""
        for passage_id in passage_ids:
            self.sketch.increment(passage_key(passage_id))

    def estimate(self, passage_id: str) -> int:
        return self.sketch.estimate(passage_key(passage_id))
