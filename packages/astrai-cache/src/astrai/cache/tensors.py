"""The KV tensors themselves: per layer K and V of shape [num_pages, page_size, kv_heads, head_dim].

All layers live in one buffer `[num_layers, 2, num_pages, page_size, kv_heads, head_dim]`, so
copying a page for copy-on-write is a single tensor copy across every layer, and each layer's
K and V are contiguous views the model can index by slot (`page * page_size + offset`).
"""

from __future__ import annotations

import torch


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class KVTensors:
    """Device memory for the paged KV cache, sized by page count or by a byte budget."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        page_size: int = 16,
        num_pages: int | None = None,
        memory_budget_bytes: int | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_layers = _positive_int("num_layers", num_layers)
        self.num_kv_heads = _positive_int("num_kv_heads", num_kv_heads)
        self.head_dim = _positive_int("head_dim", head_dim)
        self.page_size = _positive_int("page_size", page_size)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.device = torch.device(device)
        self.bytes_per_page = self.page_bytes(num_layers, num_kv_heads, head_dim, page_size, dtype)
        self.num_pages = self._resolve_num_pages(num_pages, memory_budget_bytes)
        # Not zeroed: every slot is written before any attention reads it (readers mask what lies
        # past a sequence's length), so the pool costs resident memory only as it fills.
        self.buffer = torch.empty(
            (num_layers, 2, self.num_pages, page_size, num_kv_heads, head_dim), dtype=dtype, device=self.device
        )
        self.caches: list[tuple[torch.Tensor, torch.Tensor]] = [
            (self.buffer[layer, 0], self.buffer[layer, 1]) for layer in range(num_layers)
        ]

    @staticmethod
    def page_bytes(num_layers: int, num_kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype) -> int:
        """Bytes one page takes across all layers, K and V together."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * page_size * num_kv_heads * head_dim * itemsize

    def _resolve_num_pages(self, num_pages: int | None, budget: int | None) -> int:
        if num_pages is None and budget is None:
            raise ValueError("give num_pages or memory_budget_bytes to size the KV cache")
        limit = None
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
                raise ValueError(f"memory_budget_bytes must be a non-negative integer, got {budget!r}")
            limit = budget // self.bytes_per_page
            if limit < 1:
                raise ValueError(
                    f"memory_budget_bytes={budget} holds no page: one page needs {self.bytes_per_page} bytes"
                )
        if num_pages is None:
            return limit  # type: ignore[return-value]
        num_pages = _positive_int("num_pages", num_pages)
        # num_pages caps the pool; a budget given alongside caps it further.
        return num_pages if limit is None else min(num_pages, limit)

    @property
    def capacity_tokens(self) -> int:
        return self.num_pages * self.page_size

    @property
    def capacity_bytes(self) -> int:
        return self.num_pages * self.bytes_per_page

    def copy_page(self, src: int, dst: int) -> None:
        """Copy one page's K and V in every layer (the data half of copy-on-write)."""
        self.buffer[:, :, dst].copy_(self.buffer[:, :, src])
