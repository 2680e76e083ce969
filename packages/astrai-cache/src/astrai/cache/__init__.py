"""astrai.cache: paged KV memory with a radix prefix cache and copy-on-write.

The scheduler talks to `KVCacheManager`; the lower pieces are public for tests and benches.
"""

from .errors import (
    CacheError,
    CacheInvariantError,
    DoubleFreeError,
    LockError,
    OutOfPagesError,
    PageLengthError,
    StaleHandleError,
    UnknownSequenceError,
)
from .events import PAGE_EVENT_KINDS, CacheEvent, CacheStats, EventKind
from .eviction import EvictionPolicy, LRUPolicy, TinyLFUPolicy
from .manager import KVCacheManager, PrefixLookup
from .page_table import PageTable
from .pool import PageHandle, PagePool
from .radix import RadixCache, RadixNode
from .sketch import CountMinSketch
from .tensors import KVTensors

__all__ = [
    "PAGE_EVENT_KINDS",
    "CacheError",
    "CacheEvent",
    "CacheInvariantError",
    "CacheStats",
    "CountMinSketch",
    "DoubleFreeError",
    "EventKind",
    "EvictionPolicy",
    "KVCacheManager",
    "KVTensors",
    "LRUPolicy",
    "LockError",
    "OutOfPagesError",
    "PageHandle",
    "PageLengthError",
    "PagePool",
    "PageTable",
    "PrefixLookup",
    "RadixCache",
    "RadixNode",
    "StaleHandleError",
    "TinyLFUPolicy",
    "UnknownSequenceError",
]
