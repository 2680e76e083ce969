"""The paged-cache scene: the real page pool, page tables growing, prefixes shared, pages
freed, reused and evicted."""

from __future__ import annotations

import math

from manim import DOWN, LEFT, RIGHT, UP, FadeIn, FadeOut, Square, Transform, VGroup

from ..beats.paged_cache import Cell, PoolIntroBeat, PoolStepBeat, PoolSummaryBeat, TableRow
from .base import BeatScene
from .style import ACCENT, BLUE, FREE, GREEN, MONO, MUTED, ORANGE, PURPLE, RED, TEAL, TEXT, label

GRID_CENTER = (-3.85, -0.15)
GRID_SPAN = 5.2
TABLES_LEFT, TABLES_TOP = 0.2, 2.45
TABLE_BOX, MAX_TABLE_PAGES = 0.42, 12

FLASH_COLORS = {
    "allocated": ACCENT,
    "reused": GREEN,
    "shared": PURPLE,
    "copied": TEAL,
    "freed": RED,
    "evicted": ORANGE,
}


def _fill(cell: Cell) -> str:
    if cell.state == "used":
        return PURPLE if cell.refcount > 1 else BLUE
    return TEAL if cell.state == "cached" else FREE


def _grid_geometry(count: int) -> tuple[int, float]:
    columns = max(1, math.ceil(math.sqrt(count)))
    return columns, GRID_SPAN / columns


def grid_position(page_index: int, count: int) -> tuple[float, float]:
    columns, pitch = _grid_geometry(count)
    rows = math.ceil(count / columns)
    col, row = page_index % columns, page_index // columns
    return (GRID_CENTER[0] + (col - (columns - 1) / 2) * pitch, GRID_CENTER[1] - (row - (rows - 1) / 2) * pitch)


def pool_squares(cells: tuple[Cell, ...]) -> VGroup:
    """One square per page; same structure every step so colour changes animate."""
    _, pitch = _grid_geometry(len(cells))
    squares = VGroup()
    for i, cell in enumerate(cells):
        square = Square(side_length=pitch * 0.86)
        color = FLASH_COLORS.get(cell.flash)
        square.set_fill(_fill(cell), 1).set_stroke(color or MUTED, 5 if color else 1)
        square.move_to([*grid_position(i, len(cells)), 0])
        squares.add(square)
    return squares


def pool_labels(cells: tuple[Cell, ...]) -> VGroup:
    """Page numbers and, for pages held by several requests, their reference count."""
    _, pitch = _grid_geometry(len(cells))
    size = max(10, min(16, pitch * 26))
    labels = VGroup()
    for i, cell in enumerate(cells):
        x, y = grid_position(i, len(cells))
        dim = cell.state == "free"
        labels.add(label(str(cell.page), size, MUTED if dim else TEXT).move_to([x, y + (0.08 if cell.refcount > 1 else 0), 0]))
        if cell.refcount > 1:
            labels.add(label(f"×{cell.refcount}", size * 0.8, ACCENT, weight="BOLD").move_to([x, y - pitch * 0.24, 0]))
    return labels


def page_tables(tables: tuple[TableRow, ...]) -> VGroup:
    group = VGroup(label("page tables of the running requests", 17, TEXT, weight="BOLD")
                   .move_to([TABLES_LEFT, TABLES_TOP + 0.35, 0], aligned_edge=LEFT))
    if not tables:
        group.add(label("(no request running)", 15, MUTED).move_to([TABLES_LEFT, TABLES_TOP - 0.25, 0], aligned_edge=LEFT))
    for row, table in enumerate(tables):
        y = TABLES_TOP - 0.25 - row * 0.52
        group.add(label(table.request_id, 15, TEXT, weight="BOLD", max_width=0.75)
                  .move_to([TABLES_LEFT, y, 0], aligned_edge=LEFT))
        for j, (page, shared) in enumerate(zip(table.pages[:MAX_TABLE_PAGES], table.shared[:MAX_TABLE_PAGES], strict=True)):
            x = TABLES_LEFT + 1.0 + j * (TABLE_BOX + 0.06)
            box = Square(side_length=TABLE_BOX).set_fill(PURPLE if shared else BLUE, 1).set_stroke(MUTED, 1)
            box.move_to([x, y, 0])
            group.add(box, label(str(page), 12, TEXT).move_to(box))
        if len(table.pages) > MAX_TABLE_PAGES:
            group.add(label(f"+{len(table.pages) - MAX_TABLE_PAGES}", 13, MUTED).move_to(
                [TABLES_LEFT + 1.0 + MAX_TABLE_PAGES * (TABLE_BOX + 0.06), y, 0], aligned_edge=LEFT))
    return group


def legend() -> VGroup:
    items = VGroup()
    for name, fill, stroke in (("free", FREE, MUTED), ("in use", BLUE, MUTED), ("shared (×refs)", PURPLE, MUTED),
                               ("cached prefix", TEAL, MUTED), ("just allocated", FREE, ACCENT),
                               ("reused", FREE, GREEN), ("freed", FREE, RED), ("evicted", FREE, ORANGE)):
        swatch = Square(side_length=0.22).set_fill(fill, 1).set_stroke(stroke, 3 if stroke != MUTED else 1)
        items.add(VGroup(swatch, label(name, 13, MUTED).next_to(swatch, RIGHT, buff=0.08)))
    items.arrange_in_grid(rows=2, cols=4, buff=(0.3, 0.14), col_alignments="llll")
    return items.move_to([3.45, -2.4, 0])


def step_texts(beat: PoolStepBeat) -> VGroup:
    counter = label(f"step {beat.step}", 20, ACCENT, weight="BOLD").to_corner(UP + RIGHT, buff=0.35)
    group = VGroup(counter)
    if beat.skipped:
        group.add(label(f"({beat.skipped} step{'s' if beat.skipped != 1 else ''} not shown)", 13, MUTED).next_to(counter, DOWN, buff=0.08)
                  .align_to(counter, RIGHT))
    group.add(label(beat.caption, 19, TEXT, max_width=13.5).move_to([0, -3.25, 0]))
    if beat.events:
        group.add(label(beat.events, 16, ACCENT, max_width=13.5, font=MONO).move_to([0, -3.68, 0]))
    return group


class PagedCacheScene(BeatScene):
    def construct(self) -> None:
        self.squares: VGroup | None = None
        self.texts = VGroup()
        self.intro_caption = VGroup()
        super().construct()

    def play_beat(self, beat) -> None:
        if isinstance(beat, PoolIntroBeat):
            self._intro(beat)
        elif isinstance(beat, PoolStepBeat):
            self._step(beat)
        elif isinstance(beat, PoolSummaryBeat):
            self._summary(beat)

    def _intro(self, beat: PoolIntroBeat) -> None:
        title = label("Paged KV cache — the real page pool", 26, TEXT, weight="BOLD").to_corner(UP + LEFT, buff=0.35)
        cells = tuple(Cell(p, "free", 0, "") for p in range(beat.window))
        self.squares = pool_squares(cells)
        labels = pool_labels(cells)
        self.intro_caption = label(beat.caption, 19, TEXT, max_width=13.5).move_to([0, -3.25, 0])
        self.animate_then_hold(FadeIn(title), FadeIn(self.squares, lag_ratio=0.02), FadeIn(labels),
                               FadeIn(legend()), FadeIn(self.intro_caption), seconds=beat.seconds, animate=1.2)
        self.texts = labels

    def _step(self, beat: PoolStepBeat) -> None:
        self.remove(self.texts, self.intro_caption)
        self.texts = VGroup(pool_labels(beat.cells), page_tables(beat.tables), step_texts(beat))
        new_squares = pool_squares(beat.cells)
        self.add(self.texts)
        self.animate_then_hold(Transform(self.squares, new_squares), seconds=beat.seconds, animate=0.5)
        self.bring_to_front(self.texts)
        if beat.key:
            self.save_poster()

    def _summary(self, beat: PoolSummaryBeat) -> None:
        tables = self.texts[1] if len(self.texts) > 1 else VGroup()
        lines = VGroup(*(label(line, 16, TEXT, max_width=6.6) for line in beat.lines))
        lines.arrange(DOWN, aligned_edge=LEFT, buff=0.28).move_to([TABLES_LEFT, 0.9, 0], aligned_edge=LEFT)
        heading = label("what the pool did in this run", 18, ACCENT, weight="BOLD")
        heading.next_to(lines, UP, buff=0.35, aligned_edge=LEFT)
        self.animate_then_hold(FadeOut(tables), FadeIn(heading, shift=UP * 0.1), FadeIn(lines, shift=UP * 0.1),
                               seconds=beat.seconds, animate=1.0)
