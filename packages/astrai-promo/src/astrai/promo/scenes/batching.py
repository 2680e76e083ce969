"""The continuous-batching scene: the loop, the real requests' lanes, the free-page bitmask,
and the measured static vs continuous throughput."""

from __future__ import annotations

import numpy as np
from manim import (
    DOWN,
    LEFT,
    RIGHT,
    UP,
    Arrow,
    FadeIn,
    FadeOut,
    GrowFromEdge,
    Line,
    Rectangle,
    RoundedRectangle,
    Transform,
    VGroup,
)

from ..beats.batching import PHASE_TITLES, BatchStepBeat, Lane, LoopBeat, Phase, ThroughputBeat
from .base import BeatScene
from .style import ACCENT, BLUE, FREE, GREEN, MUTED, ORANGE, PANEL, TEXT, label

STATE_COLORS = {
    "pending": FREE,
    "waiting": MUTED,
    "prefill": ORANGE,
    "decode": BLUE,
    "finished": GREEN,
    "gone": GREEN,  # drawn faded: done and out of the batch
}
_LOOP_POSITIONS = {  # the loop runs clockwise round a square
    "schedule": (-5.55, 2.45),
    "build_batch": (-3.35, 2.45),
    "forward": (-3.35, 1.05),
    "sample": (-5.55, 1.05),
}
LANES_LEFT, LANES_TOP, LANES_BOTTOM = -1.9, 2.75, -0.55
BAR_LEFT, BAR_WIDTH = -1.0, 3.3
MASK_COLUMNS, MASK_CELL = 32, 0.26


def phase_box(phase: Phase, active: bool) -> VGroup:
    x, y = _LOOP_POSITIONS[phase.key]
    box = RoundedRectangle(corner_radius=0.1, width=1.85, height=0.8).move_to([x, y, 0])
    box.set_stroke(ACCENT if active else BLUE, 4 if active else 2).set_fill(ACCENT if active else PANEL, 0.25 if active else 1)
    name = label(phase.name, 18, TEXT, weight="BOLD", max_width=1.7).move_to([x, y + (0.12 if phase.mean_ms is not None else 0), 0])
    group = VGroup(box, name)
    if phase.mean_ms is not None:
        group.add(label(f"{phase.mean_ms:.1f} ms avg", 12, MUTED).move_to([x, y - 0.2, 0]))
    return group


def loop_diagram(phases: tuple[Phase, ...], active: tuple[str, ...] = ()) -> VGroup:
    boxes = VGroup(*(phase_box(p, p.key in active) for p in phases))
    arrows = VGroup()
    for i in range(len(PHASE_TITLES)):
        start, end = boxes[i][0], boxes[(i + 1) % len(PHASE_TITLES)][0]
        direction = end.get_center() - start.get_center()
        direction = direction / np.linalg.norm(direction)  # the boxes sit on a square: an axis
        arrows.add(Arrow(start.get_edge_center(direction), end.get_edge_center(-direction), buff=0.06,
                         stroke_width=3, color=MUTED, max_tip_length_to_length_ratio=0.3))
    return VGroup(boxes, arrows)


def _row_height(count: int) -> float:
    return min(0.5, (LANES_TOP - LANES_BOTTOM) / max(count, 1))


def lane_bars(lanes: tuple[Lane, ...]) -> VGroup:
    """Progress bars (background + fill) of every lane; same structure each step, so they animate."""
    h = _row_height(len(lanes))
    bars = VGroup()
    for i, lane in enumerate(lanes):
        y = LANES_TOP - h * (i + 0.5)
        bg = Rectangle(width=BAR_WIDTH, height=h * 0.55).set_stroke(MUTED, 1).set_fill(PANEL, 1)
        bg.move_to([BAR_LEFT + BAR_WIDTH / 2, y, 0])
        share = lane.tokens_out / lane.tokens_target if lane.tokens_target else 0.0
        width = max(BAR_WIDTH * min(share, 1.0), 0.02)
        fill = Rectangle(width=width, height=h * 0.55).set_stroke(width=0)
        fill.set_fill(STATE_COLORS[lane.state], 0.35 if lane.state == "gone" else 1)
        fill.move_to([BAR_LEFT + width / 2, y, 0])
        bars.add(VGroup(bg, fill))
    return bars


def lane_texts(lanes: tuple[Lane, ...]) -> VGroup:
    h = _row_height(len(lanes))
    size = 16 if h >= 0.4 else 13
    texts = VGroup()
    for i, lane in enumerate(lanes):
        y = LANES_TOP - h * (i + 0.5)
        dim = lane.state in ("pending", "gone")
        rid = label(lane.request_id, size, MUTED if dim else TEXT, weight="BOLD", max_width=0.8)
        rid.move_to([LANES_LEFT, y, 0], aligned_edge=LEFT)
        note = label(lane.label, size - 2, MUTED if dim else STATE_COLORS[lane.state], max_width=4.2)
        note.move_to([BAR_LEFT + BAR_WIDTH + 0.2, y, 0], aligned_edge=LEFT)
        texts.add(rid, note)
    return texts


def free_mask(mask: tuple[bool, ...]) -> VGroup:
    cells = VGroup()
    for i, free in enumerate(mask):
        cell = Rectangle(width=MASK_CELL * 0.85, height=MASK_CELL * 0.85)
        cell.set_stroke(MUTED if free else BLUE, 1).set_fill(FREE if free else BLUE, 1)
        cell.move_to([(i % MASK_COLUMNS - (MASK_COLUMNS - 1) / 2) * MASK_CELL + 0.9,
                      -1.7 - (i // MASK_COLUMNS) * MASK_CELL, 0])
        cells.add(cell)
    return cells


def step_texts(beat: BatchStepBeat) -> VGroup:
    counter = label(f"step {beat.step}", 20, ACCENT, weight="BOLD").to_corner(UP + RIGHT, buff=0.35)
    group = VGroup(counter)
    if beat.skipped:
        group.add(label(f"({beat.skipped} step{'s' if beat.skipped != 1 else ''} not shown)", 13, MUTED).next_to(counter, DOWN, buff=0.08).align_to(counter, RIGHT))
    shown = len(beat.free_mask)
    window = f"pages 0-{shown - 1}" if shown < beat.num_pages else f"{beat.num_pages} pages"
    mask_title = label(f"free-page bitmask ({window}): {beat.num_free_pages} of {beat.num_pages} free",
                       15, TEXT, max_width=7.5)
    mask_title.move_to([0.9, -1.3, 0])
    group.add(mask_title)
    group.add(label(beat.caption, 20, TEXT, max_width=13.5).move_to([0, -3.05, 0]))
    if beat.events:
        group.add(label(beat.events, 17, ACCENT, max_width=13.5).move_to([0, -3.55, 0]))
    return group


def throughput_chart(beat: ThroughputBeat) -> VGroup:
    """The measured bar chart; every number comes from the beat (i.e. from the trace)."""
    top = max(beat.static_tokens_per_s, beat.continuous_tokens_per_s, 1e-9)
    base_y, max_h = -2.1, 3.6
    axis = Line([-3.5, base_y, 0], [3.5, base_y, 0], color=MUTED, stroke_width=2)
    bars, labels = VGroup(), VGroup()
    for x, value, text, color in ((-1.6, beat.static_tokens_per_s, beat.static_label, MUTED),
                                  (1.6, beat.continuous_tokens_per_s, beat.continuous_label, GREEN)):
        height = max(max_h * value / top, 0.03)
        bar = Rectangle(width=1.9, height=height).set_stroke(width=0).set_fill(color, 1)
        bar.move_to([x, base_y + height / 2, 0])
        bars.add(bar)
        lines = VGroup(*(label(line, 18, TEXT) for line in text.split("\n"))).arrange(DOWN, buff=0.08)
        labels.add(lines.next_to(bar, UP, buff=0.12))
    title = label(beat.ratio_text, 26, ACCENT, weight="BOLD", max_width=13).move_to([0, 3.2, 0])
    detail = label(beat.detail, 15, MUTED, max_width=13.2).move_to([0, -2.75, 0])
    return VGroup(title, axis, bars, labels, detail)


class BatchingScene(BeatScene):
    def construct(self) -> None:
        self.loop: VGroup | None = None
        self.phases: tuple[Phase, ...] = ()
        self.bars: VGroup | None = None
        self.mask: VGroup | None = None
        self.texts = VGroup()
        super().construct()

    def play_beat(self, beat) -> None:
        if isinstance(beat, LoopBeat):
            self._loop(beat)
        elif isinstance(beat, BatchStepBeat):
            self._step(beat)
        elif isinstance(beat, ThroughputBeat):
            self._throughput(beat)

    def _loop(self, beat: LoopBeat) -> None:
        title = label("Continuous batching — what the engine did", 26, TEXT, weight="BOLD")
        title.to_corner(UP + LEFT, buff=0.35)
        self.phases = beat.phases
        self.loop = loop_diagram(beat.phases)
        caption = label(beat.caption, 18, MUTED, max_width=13.5).move_to([0, -3.05, 0])
        legend = VGroup()
        for name, color in (("waiting", MUTED), ("prefill", ORANGE), ("decoding", BLUE), ("finished", GREEN),
                            ("free page", FREE), ("page in use or cached", BLUE)):
            swatch = Rectangle(width=0.2, height=0.2).set_stroke(MUTED, 1).set_fill(color, 1)
            legend.add(VGroup(swatch, label(name, 13, MUTED).next_to(swatch, RIGHT, buff=0.08)))
        legend.arrange_in_grid(rows=3, cols=2, buff=(0.25, 0.12), col_alignments="ll")
        legend.move_to([-4.45, -0.55, 0])
        if beat.forward_ms is not None:
            forward = label("prefill chunks and decode tokens share\n"
                            f"one model forward: {beat.forward_ms:.0f} ms per step",
                            13, MUTED, max_width=4.4)
            legend.add(forward.move_to([-4.45, 0.3, 0]))
        self.texts = caption
        self.animate_then_hold(FadeIn(title), FadeIn(self.loop), FadeIn(legend), FadeIn(caption),
                               seconds=beat.seconds, animate=1.0)
        self.add(title, legend)

    def _step(self, beat: BatchStepBeat) -> None:
        animations = []
        new_loop = loop_diagram(self.phases, beat.active_phases)
        # only the phase boxes change colour; their labels stay put (cheaper to render)
        animations += [Transform(old[0], new[0]) for old, new in zip(self.loop[0], new_loop[0], strict=True)]
        new_bars, new_mask = lane_bars(beat.lanes), free_mask(beat.free_mask)
        if self.bars is None or len(self.bars) != len(new_bars):
            if self.bars is not None:
                self.remove(self.bars)
            self.bars = new_bars
            animations.append(FadeIn(new_bars))
        else:
            animations.append(Transform(self.bars, new_bars))
        if self.mask is None or len(self.mask) != len(new_mask):
            if self.mask is not None:
                self.remove(self.mask)
            self.mask = new_mask
            animations.append(FadeIn(new_mask))
        else:
            animations.append(Transform(self.mask, new_mask))
        self.remove(self.texts)
        self.texts = VGroup(lane_texts(beat.lanes), step_texts(beat))
        self.add(self.texts)
        self.animate_then_hold(*animations, seconds=beat.seconds, animate=0.5)
        if beat.key:
            self.save_poster()

    def _throughput(self, beat: ThroughputBeat) -> None:
        fade = min(0.5, beat.seconds * 0.15)
        self.play(*(FadeOut(m) for m in self.mobjects), run_time=fade)
        chart = throughput_chart(beat)
        title, axis, bars, labels, detail = chart
        grow = [GrowFromEdge(bar, DOWN) for bar in bars]
        self.animate_then_hold(FadeIn(title), FadeIn(axis), *grow, FadeIn(labels), FadeIn(detail),
                               seconds=beat.seconds - fade, animate=1.2)
