"""Dense float linears whose rows do not depend on the batch they are in.

BLAS sgemm gives a row the same result at any M that is a multiple of 8, but a call of a few
rows takes a different (gemv-like) path with another summation order; so the rows are padded to
a multiple of 8. The native forward's dense linears do the same (csrc/forward.cpp); the tests
check the property on the machine that runs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROW_MULTIPLE = 8


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight.T (+ bias), each row's result independent of the others'."""
    rows = x.reshape(-1, x.shape[-1])
    count = rows.shape[0]
    padded = -(-count // ROW_MULTIPLE) * ROW_MULTIPLE
    if padded != count:
        rows = F.pad(rows, (0, 0, 0, padded - count))
    y = rows @ weight.T
    if padded != count:
        y = y[:count]
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


__all__ = ["ROW_MULTIPLE", "linear"]
