"""astrai-cache's basic job, run inside its own venv: a page pool with a radix prefix cache.

Sequence "a" writes K/V for 10 tokens over pages of 4 and is cached; "b" shares its first 8
tokens, so it must attach a's two full pages zero-copy and read back exactly a's K/V there.
"""

import json

import torch
from astrai.cache import KVCacheManager

manager = KVCacheManager(num_layers=2, num_kv_heads=2, head_dim=8, page_size=4, num_pages=8, dtype=torch.float32)
a = list(range(10))
assert manager.open("a", a) == 0 and manager.reserve("a", len(a))
slots = torch.tensor(manager.slot_mapping("a", 0, len(a)))
written = torch.arange(len(a) * 2 * 8, dtype=torch.float32).view(len(a), 2, 8)
for keys, values in manager.kv_caches:
    keys.view(-1, 2, 8)[slots] = written
    values.view(-1, 2, 8)[slots] = -written
manager.close("a", a)

b = a[:8] + [50, 51, 52]
cached = manager.open("b", b)
assert manager.reserve("b", len(b))
shared = manager.block_table("b")[:2]
b_slots = torch.tensor(manager.slot_mapping("b", 0, 8))
keys, values = manager.kv_caches[1]
same = bool(torch.equal(keys.view(-1, 2, 8)[b_slots], written[:8]))
manager.close("b", b)
manager.check_invariants()
stats = manager.stats()
print(json.dumps({"cached": cached, "shared_pages": len(shared), "kv_equal": same, "free": stats.free_pages,
                  "cached_pages": stats.cached_pages, "num_pages": stats.num_pages}))
