"""Number formatting shared by every scene, so the same value reads the same everywhere."""

from __future__ import annotations


def thousands(n: int | float) -> str:
    """49152 -> '49,152'."""
    return f"{int(round(n)):,}"


def params(n: int) -> str:
    """134515008 -> '134.5M'; 1234567890 -> '1.23B'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def ratio(x: float) -> str:
    """2.347 -> '2.35×'."""
    return f"{x:.2f}×"


def rate(x: float) -> str:
    """Tokens per second with sensible precision: 1234.5 -> '1,234', 56.78 -> '56.8'."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def pages(items: list[int] | tuple[int, ...], limit: int = 8) -> str:
    """A short page list: '3, 4, 5' or '3, 4, 5, … (+9)'."""
    items = list(items)
    shown = ", ".join(str(p) for p in items[:limit])
    return shown + (f", … (+{len(items) - limit})" if len(items) > limit else "")


def count(n: int, noun: str) -> str:
    """count(1, 'token') -> '1 token'; count(5, 'token') -> '5 tokens'."""
    return f"{thousands(n)} {noun}{'' if n == 1 else 's'}"
