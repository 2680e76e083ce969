"""Temperature sampling of logits rows by inverse CDF: the native kernel and its torch twin.

The arithmetic per row (csrc/sampling.h): z = logits / t, e = exp(z - max z), the running mass
over chunks of 16 tokens (each chunk summed by a fixed tree, the chunks left to right), and the
first token whose running mass exceeds u * total. A row's token depends only on its own logits,
temperature and u, never on the other rows. The native op runs on the kernels' own worker team,
which is awake right after a forward; torch's ops there paid its OpenMP pool's wake-ups.
"""

from __future__ import annotations

import torch

from .kernels import loaded_kernels


def sample_temperature(logits: torch.Tensor, temperature: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor | None:
    """Each row's token (int64 [R]; -1 for a row with a NaN or infinite logit maximum), or None
    where the native kernels cannot run it (none loaded in this process yet, the torch path
    chosen, or logits not float32 on the CPU): then sample with the torch twin or any other
    sampler. logits [R, V] float32, temperature [R] (> 0), uniform [R] in [0, 1)."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2:
        return None
    chosen = loaded_kernels()  # never a first compile in the middle of serving
    if chosen is None:
        return None
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return chosen.ops.sample_temperature(logits, temperature.to(torch.float32).contiguous(),
                                     uniform.to(torch.float64).contiguous())


def sample_temperature_torch(logits: torch.Tensor, temperature: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The same picks in torch (its exp may differ from the kernel's by an ulp, so a row whose u
    falls within rounding of a token boundary may pick the neighbour)."""
    rows, vocab = logits.shape
    chunks = (vocab + 15) // 16
    z = logits.float() / temperature.float().unsqueeze(1)
    m = z.max(dim=1, keepdim=True).values
    e = torch.zeros(rows, chunks * 16, dtype=torch.float32)
    e[:, :vocab] = torch.exp(z - m)
    tree = e.view(rows, chunks, 16)
    tree = tree[..., :8] + tree[..., 8:]
    tree = tree[..., :4] + tree[..., 4:]
    tree = tree[..., :2] + tree[..., 2:]
    sums = tree[..., 0] + tree[..., 1]
    out = torch.full((rows,), -1, dtype=torch.long)
    for r in range(rows):
        if not torch.isfinite(m[r]).all():
            continue
        running = torch.cumsum(sums[r], dim=0)  # float32, left to right
        if torch.isnan(running[-1]):
            continue
        threshold = float(uniform[r]) * float(running[-1])
        over = (running.double() > threshold).nonzero()
        if not len(over):  # rounding: the row's last token with mass
            out[r] = int((e[r, :vocab] > 0).nonzero()[-1])
            continue
        c = int(over[0])
        mass = torch.tensor(float(running[c - 1]) if c > 0 else 0.0, dtype=torch.float32)
        last = -1
        for k in range(16):
            value = e[r, c * 16 + k]
            if value <= 0:
                continue
            mass = mass + value
            last = k
            if float(mass) > threshold:
                break
        out[r] = c * 16 + last
    return out
