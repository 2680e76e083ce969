"""Position-keyed random numbers for sampling: the draw for an output position depends only on
(seed, choice index, position), never on the request id, the batch or how many positions a
step samples at once.

That is what makes a sampled request's text independent of speculative decoding (a position
verified inside a chunk of proposals draws the same number as when it is decoded alone), of
preemption and recompute, and of what else shares the step. Seeded requests use their seed;
unseeded ones a seed the engine draws for them once, so their outputs are still random.

The draw is a counter-based hash (splitmix64's finaliser applied to the three keys in turn):
no generator state to keep, copy or restore.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1
_UNIT = 1.0 / (1 << 24)  # 24-bit uniforms: exactly representable in float32, so never rounded up to 1.0


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def position_uniform(seed: int, index: int, position: int) -> float:
    """A uniform number in [0, 1) for output `position` of choice `index` of a request seeded `seed`."""
    return (_mix(_mix(_mix(seed & _MASK) ^ index) ^ position) >> 40) * _UNIT
