"""A Count-Min Sketch with periodic halving: TinyLFU's frequency estimate.

It answers "about how often was this prefix used lately?" in a few bytes per entry. Counters
saturate at `max_count`; after `sample_size` increments every counter is halved, so old
popularity fades and a prefix that was hot yesterday does not squat in the cache forever.
Estimates never undercount (before halving) and overcount only on hash collisions.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
# Odd 64-bit multipliers: one independent-enough hash per row (multiply-shift hashing).
_SEEDS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)
_HALVE = bytes(i >> 1 for i in range(256))


class CountMinSketch:
    """Approximate per-key counts in `depth` rows of `width` saturating byte counters."""

    def __init__(self, width: int, *, max_count: int = 15, sample_size: int | None = None) -> None:
        if width < 1:
            raise ValueError(f"sketch width must be positive, got {width}")
        if not 1 <= max_count <= 255:
            raise ValueError(f"max_count must be in 1..255, got {max_count}")
        self.bits = max(4, (width - 1).bit_length())
        self.width = 1 << self.bits
        self.depth = len(_SEEDS)
        self.max_count = max_count
        self.sample_size = sample_size if sample_size is not None else 10 * self.width
        self._rows = [bytearray(self.width) for _ in range(self.depth)]
        self._additions = 0
        self.resets = 0  # how many times the counters were halved

    def _indexes(self, key: int) -> list[int]:
        h = key & _MASK64
        shift = 64 - self.bits
        return [((h * seed) & _MASK64) >> shift for seed in _SEEDS]

    def estimate(self, key: int) -> int:
        return min(row[i] for row, i in zip(self._rows, self._indexes(key), strict=True))

    def increment(self, key: int) -> None:
        """Count one use of `key`; halves every counter once per `sample_size` uses."""
        self.add(key, 1)
        self._additions += 1
        if self._additions >= self.sample_size:
            self._halve()

    def add(self, key: int, n: int) -> None:
        """Raise `key`'s counters by `n` (saturating) without counting towards the halving sample."""
        cap = self.max_count
        for row, i in zip(self._rows, self._indexes(key), strict=True):
            row[i] = min(cap, row[i] + n)

    def _halve(self) -> None:
        for row in self._rows:
            row[:] = row.translate(_HALVE)
        self._additions //= 2
        self.resets += 1
