"""The native kernels' own worker team (csrc/parallel.cpp), driven from C++ through test ops.

Every kernel's work splitting goes through it, so: chunks tile a range exactly once for any size
and grain, and so do stolen pieces, whose owner's run another thread finishes while the owner is
held up; a nested call runs inline; several C++ threads submitting at once all get correct
results; an exception in a worker's chunk reaches the caller with its message; a forked child
(Ray, multiprocessing) gets a working team of its own instead of waiting on its parent's threads.
"""

from __future__ import annotations

import multiprocessing

import pytest
from torch_threads import torch_threads


@pytest.mark.parametrize("n, grain", [(0, 1), (1, 1), (2, 1), (7, 1), (100, 3), (1000, 256), (5, 100), (4097, 1)])
def test_chunks_cover_the_range_once(native_kernels, n, grain):
    visits = native_kernels.testing_ops().parallel_for_visits(n, grain)
    assert visits.tolist() == [1] * n


@pytest.mark.parametrize("n, piece", [(2, 1), (7, 1), (100, 3), (4097, 16), (64, 63)])
@pytest.mark.parametrize("threads", [2, 3])
def test_pieces_cover_the_range_once_and_are_stolen(native_kernels, n, piece, threads):
    """The piece holding index 0 waits until every other index is done (the op raises after its
    timeout otherwise), so its owner's other pieces must be taken by another thread: with a
    static split into one run per thread this fails."""
    with torch_threads(threads):
        assert native_kernels.testing_ops().parallel_for_stealing_visits(n, piece, 10_000).tolist() == [1] * n


def test_concurrent_submitters_all_get_exact_results(native_kernels):
    assert native_kernels.testing_ops().parallel_for_concurrent_errors(4, 200, 257) == 0


def test_an_exception_in_a_chunk_reaches_the_caller(native_kernels):
    with pytest.raises(RuntimeError, match="raised in the chunk ending at 64"):
        native_kernels.testing_ops().parallel_for_raise(64)
    # and the team still works afterwards
    assert native_kernels.testing_ops().parallel_for_visits(64, 1).tolist() == [1] * 64


def _child_visits(queue, variant: str) -> None:
    from astrai.model.kernels import kernels_for

    queue.put(kernels_for(variant).testing_ops().parallel_for_visits(1000, 1).sum().item())


def test_a_forked_child_builds_its_own_team(native_kernels):
    assert native_kernels.testing_ops().parallel_for_visits(1000, 1).sum().item() == 1000  # the parent's team exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_visits, args=(queue, native_kernels.variant))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the forked child hung or crashed in parallel_for"
    assert queue.get(timeout=5) == 1000
