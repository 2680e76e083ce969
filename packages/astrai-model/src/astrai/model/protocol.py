"""`ForwardModel`: what the engine needs of a model, and nothing more.

`Transformer` is one implementation; a native fused forward can be another. The seam is the
ragged `ForwardBatch` plus the KV tensors the cache package owns (per layer `(k, v)`, each
`[num_pages, page_size, num_kv_heads, head_dim]`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .batch import ForwardBatch
from .config import ModelConfig


@runtime_checkable
class ForwardModel(Protocol):
    """A model the scheduler can drive: its config, where it runs, and one ragged paged forward."""

    config: ModelConfig

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of its weights, and so of the KV cache the engine allocates for it."""
        ...

    @property
    def low_bit(self) -> bool:
        """Whether some weights are served packed in a GGUF block quantization."""
        ...

    @property
    def backend(self) -> str:
        """How a step runs: "native" (one C++ call) or "torch" (the Python layers)."""
        ...

    @property
    def kernels(self) -> str:
        """The native kernel variant its ops run on ("avx2" | "avx512" | "amx"), or "torch"."""
        ...

    def weight_format(self) -> str:
        """How the weights are held, e.g. "Q4_K+Q6_K+Q8_0 (packed), float32"."""
        ...

    def forward(
        self, batch: ForwardBatch, kv_caches: list[tuple[torch.Tensor, torch.Tensor]] | None, page_size: int
    ) -> torch.Tensor:
        """Write the batch's new K/V into `kv_caches`; return float32 logits [R, vocab] for
        `batch.logits_indices`."""
        ...
