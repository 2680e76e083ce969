"""How often each passage was retrieved lately: astrai.cache's count-min sketch (with periodic
halving, so popularity fades) keyed by a stable 64-bit hash of the passage id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def passage_key(passage_id: str) -> int:
    """A 64-bit key that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(passage_id.encode(), digest_size=8).digest(), "little")


class PassagePopularity:
    """Approximate recent retrieval counts per passage id (saturating at `max_count`; every
    counter halves after `sample_size` recorded retrievals, 10 x width by default)."""

    def __init__(self, width: int = 1 << 16, *, max_count: int = 255, sample_size: int | None = None) -> None:
        # Imported here: astrai.cache imports torch, which index-only users of this package
        # (a store, a bench, a durability test's child process) need not load.
        from astrai.cache import CountMinSketch

        self.sketch = CountMinSketch(width, max_count=max_count, sample_size=sample_size)

    def record(self, passage_ids: Iterable[str]) -> None:
        """Count one retrieval of each passage."""
        for passage_id in passage_ids:
            self.sketch.increment(passage_key(passage_id))

    def estimate(self, passage_id: str) -> int:
        return self.sketch.estimate(passage_key(passage_id))
