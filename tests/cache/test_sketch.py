"""CountMinSketch: never undercounts, saturates, and halves so old popularity fades."""

import random

import pytest
from astrai.cache import CountMinSketch


def test_estimates_are_upper_bounds_and_mostly_exact():
    sketch = CountMinSketch(1024, max_count=255, sample_size=10**9)
    rng = random.Random(0)
    truth: dict[int, int] = {}
    for _ in range(3000):
        key = hash(("prefix", rng.randrange(400)))
        truth[key] = truth.get(key, 0) + 1
        sketch.increment(key)
    exact = 0
    for key, count in truth.items():
        est = sketch.estimate(key)
        assert est >= min(count, 255)
        exact += est == count
    assert exact >= 0.9 * len(truth)
    assert sketch.estimate(hash("never seen")) <= 2


def test_counters_saturate_and_halve_after_the_sample():
    sketch = CountMinSketch(64, max_count=15, sample_size=40)
    hot = hash("system prompt")
    for _ in range(30):
        sketch.increment(hot)
    assert sketch.estimate(hot) == 15 and sketch.resets == 0
    for i in range(10):
        sketch.increment(hash(("one-off", i)))
    assert sketch.resets == 1
    assert sketch.estimate(hot) == 7


def test_add_raises_without_counting_towards_the_sample():
    sketch = CountMinSketch(64, sample_size=5)
    sketch.add(1, 4)
    assert sketch.estimate(1) == 4 and sketch.resets == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        CountMinSketch(0)
    with pytest.raises(ValueError):
        CountMinSketch(8, max_count=300)
