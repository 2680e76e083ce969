"""`torch_threads(n)`: run a block on n torch threads (which the native kernels' team follows too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block on `count` threads. Tests run their float64 references' many small torch ops on
    one: on a busy shared machine two threads' barriers cost far more than the math."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
