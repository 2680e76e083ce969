"""The waiting queue: an indexed binary heap, checked against a sorted list."""

from astrai.scheduler.queue import IndexedHeap
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "pop", "remove"]), st.integers(-3, 3), st.integers(0, 40))))
def test_matches_sorted_reference(ops):
    heap: IndexedHeap[int] = IndexedHeap()
    ref: dict[int, tuple[int, int]] = {}
    arrival = 0
    for op, priority, pick in ops:
        if op == "push":
            item = arrival
            heap.push(item, (priority, arrival), item)
            ref[item] = (priority, arrival)
            arrival += 1
        elif op == "pop" and ref:
            best = min(ref, key=ref.__getitem__)
            assert heap.pop() == best
            del ref[best]
        elif op == "remove" and ref:
            victim = sorted(ref)[pick % len(ref)]
            assert heap.remove(victim) == victim
            del ref[victim]
        assert len(heap) == len(ref)
        if ref:
            assert heap.peek() == min(ref, key=ref.__getitem__)
        assert all(i in heap for i in ref)


def test_priority_before_arrival():
    heap: IndexedHeap[str] = IndexedHeap()
    heap.push("late-urgent", (-1, 5), "late-urgent")
    heap.push("early", (0, 1), "early")
    heap.push("earlier", (0, 0), "earlier")
    assert [heap.pop() for _ in range(3)] == ["late-urgent", "earlier", "early"]
