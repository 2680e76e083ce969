"""astrai.cache: paged KV memory with a radix prefix cache and copy-on-write.

The scheduler talks to `KVCacheManager`; the lower pieces are public for tests and benches.
"""

from .errors import (
    CacheError,
    DoubleFreeError,
    LockError,
    OutOfPagesError,
    PageLengthError,
    StaleHandleError,
    UnknownSequenceError,
)
from .events import CacheEvent, CacheStats
from .manager import KVCacheManager
from .page_table import PageTable
from .pool import PageHandle, PagePool
from .radix import RadixCache, RadixNode
from .sketch import CountMinSketch
from .tensors import KVTensors

__all__ = [
    "PagePool",
    "PageHandle",
    "KVTensors",
    "PageTable",
    "RadixCache",
    "RadixNode",
    "CountMinSketch",
    "KVCacheManager",
    "CacheStats",
    "CacheEvent",
    "CacheError",
    "StaleHandleError",
    "DoubleFreeError",
    "OutOfPagesError",
    "LockError",
    "PageLengthError",
    "UnknownSequenceError",
]
