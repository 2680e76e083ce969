"""An indexed binary min-heap: the waiting queue.

Keys are (priority, arrival) so lower priority values run first and ties go to the earlier
arrival. The index (item id -> heap slot) makes remove() O(log n), which aborts need.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Key = tuple[Any, ...]


class IndexedHeap(Generic[T]):
    """Min-heap of (key, id, item) with O(log n) push, pop, remove and O(1) peek/contains."""

    def __init__(self) -> None:
        self._heap: list[tuple[Key, Hashable, T]] = []
        self._pos: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __contains__(self, item_id: Hashable) -> bool:
        return item_id in self._pos

    def __iter__(self) -> Iterator[T]:
        """Items in heap (not sorted) order."""
        return (entry[2] for entry in self._heap)

    def push(self, item_id: Hashable, key: Key, item: T) -> None:
        if item_id in self._pos:
            raise KeyError(f"{item_id!r} is already queued")
        self._heap.append((key, item_id, item))
        self._pos[item_id] = len(self._heap) - 1
        self._sift_up(len(self._heap) - 1)

    def peek(self) -> T:
        if not self._heap:
            raise IndexError("peek from an empty queue")
        return self._heap[0][2]

    def pop(self) -> T:
        if not self._heap:
            raise IndexError("pop from an empty queue")
        return self._remove_at(0)

    def remove(self, item_id: Hashable) -> T:
        """Remove by id; KeyError if absent."""
        return self._remove_at(self._pos[item_id])

    def get(self, item_id: Hashable) -> T | None:
        i = self._pos.get(item_id)
        return None if i is None else self._heap[i][2]

    def _remove_at(self, i: int) -> T:
        heap = self._heap
        entry = heap[i]
        last = heap.pop()
        del self._pos[entry[1]]
        if i < len(heap):
            heap[i] = last
            self._pos[last[1]] = i
            self._sift_down(i)
            self._sift_up(i)
        return entry[2]

    def _sift_up(self, i: int) -> None:
        heap, pos = self._heap, self._pos
        entry = heap[i]
        while i > 0:
            parent = (i - 1) >> 1
            if heap[parent][0] <= entry[0]:
                break
            heap[i] = heap[parent]
            pos[heap[i][1]] = i
            i = parent
        heap[i] = entry
        pos[entry[1]] = i

    def _sift_down(self, i: int) -> None:
        heap, pos = self._heap, self._pos
        n = len(heap)
        entry = heap[i]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and heap[child + 1][0] < heap[child][0]:
                child += 1
            if entry[0] <= heap[child][0]:
                break
            heap[i] = heap[child]
            pos[heap[i][1]] = i
            i = child
        heap[i] = entry
        pos[entry[1]] = i
