"""Colours, fonts and small drawing helpers shared by the scenes (Text only: no LaTeX here)."""

from __future__ import annotations

from manim import NORMAL, Text

FONT = "DejaVu Sans"
MONO = "DejaVu Sans Mono"

BACKGROUND = "#0f1420"
TEXT = "#e8ecf4"
MUTED = "#8a94a8"
ACCENT = "#ffcc4d"
BLUE = "#4c9be8"
GREEN = "#5cc98b"
ORANGE = "#f0a04b"
PURPLE = "#b58cf0"
RED = "#e8665c"
TEAL = "#3cc0c0"
PANEL = "#1b2333"
FREE = "#2a3245"


def label(content: str, size: float = 20, color: str = TEXT, *, weight: str = NORMAL, font: str = FONT,
          max_width: float | None = None) -> Text:
    """A Text in the house font, shrunk to `max_width` if it would not fit."""
    mob = Text(content, font=font, font_size=size, color=color, weight=weight, line_spacing=0.8)
    if max_width is not None and mob.width > max_width:
        mob.scale_to_fit_width(max_width)
    return mob


def drawn_texts(mobject) -> list[str]:
    """Every string drawn by the Text mobjects inside `mobject` (what a viewer can read)."""
    return [m.original_text for m in mobject.get_family() if isinstance(m, Text)]
