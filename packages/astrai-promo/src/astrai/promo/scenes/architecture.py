"""The architecture scene: five stacked layers, each with its package, module and numbers."""

from __future__ import annotations

from manim import DOWN, LEFT, RIGHT, UL, UP, UR, Arrow, FadeIn, GrowArrow, RoundedRectangle, VGroup

from ..beats.architecture import HighlightBeat, Layer, LayerBeat, TitleBeat
from .base import BeatScene
from .style import ACCENT, BLUE, MONO, MUTED, PANEL, TEXT, label

BOX_WIDTH = 12.8
GAP = 0.22  # between layer boxes: five boxes, one with a retrieval line and note, fit the frame
TOP = 2.75


def _rows(layer: Layer) -> int:
    return 1 + len(layer.facts) + (1 if layer.highlight else 0)


def _box_height(layer: Layer) -> float:
    return 0.36 + 0.27 * _rows(layer)


def layer_card(layer: Layer, top: float) -> tuple[RoundedRectangle, VGroup]:
    """The box and the texts of one layer, its top edge at y=`top`."""
    height = _box_height(layer)
    box = RoundedRectangle(corner_radius=0.12, width=BOX_WIDTH, height=height)
    box.set_stroke(BLUE, 2).set_fill(PANEL, 1).move_to([0, top - height / 2, 0])
    title = label(layer.title, 21, TEXT, weight="BOLD")
    title.align_to(box, UL).shift(RIGHT * 0.25 + DOWN * 0.14)
    origin = label(layer.origin, 14, MUTED, font=MONO, max_width=BOX_WIDTH - title.width - 0.8)
    origin.align_to(box, UR).shift(LEFT * 0.25 + DOWN * 0.18)
    texts = VGroup(title, origin)
    y = title.get_bottom()[1] - 0.08
    for fact in layer.facts:
        line = label(fact, 16, TEXT, max_width=BOX_WIDTH - 0.5)
        line.next_to([box.get_left()[0] + 0.25, y, 0], DOWN, buff=0, aligned_edge=LEFT)
        texts.add(line)
        y = line.get_bottom()[1] - 0.07
    return box, texts


def note_text(box: RoundedRectangle, note: str) -> VGroup:
    """The key-idea note on the reserved last row of a highlighted layer's box."""
    text = label("★ " + note, 16, ACCENT, max_width=BOX_WIDTH - 0.5)
    text.align_to(box, LEFT).shift(RIGHT * 0.25)
    text.set_y(box.get_bottom()[1] + 0.22)
    return text


class ArchitectureScene(BeatScene):
    def construct(self) -> None:
        self.cards: dict[str, RoundedRectangle] = {}
        self.next_top = TOP
        super().construct()

    def play_beat(self, beat) -> None:
        if isinstance(beat, TitleBeat):
            title = label(beat.title, 30, TEXT, weight="BOLD").to_edge(UP, buff=0.3)
            subtitle = label(beat.subtitle, 17, MUTED, max_width=13).next_to(title, DOWN, buff=0.12)
            self.animate_then_hold(FadeIn(title, shift=DOWN * 0.2), FadeIn(subtitle), seconds=beat.seconds)
        elif isinstance(beat, LayerBeat):
            animations = []
            if self.cards:
                arrow_start = [0, self.next_top + 0.02, 0]
                arrow = Arrow(arrow_start, [0, self.next_top - GAP - 0.02, 0], buff=0, stroke_width=4,
                              color=MUTED, max_tip_length_to_length_ratio=0.5)
                animations.append(GrowArrow(arrow))
                top = self.next_top - GAP
            else:
                top = self.next_top
            box, texts = layer_card(beat.layer, top)
            self.cards[beat.layer.key] = box
            self.next_top = top - box.height
            animations += [FadeIn(box, shift=DOWN * 0.15), FadeIn(texts, shift=DOWN * 0.15)]
            self.animate_then_hold(*animations, seconds=beat.seconds, animate=0.8)
        elif isinstance(beat, HighlightBeat):
            animations = []
            for key, note in beat.notes:
                box = self.cards.get(key)
                if box is None:
                    continue
                animations.append(box.animate.set_stroke(ACCENT, 5))
                animations.append(FadeIn(note_text(box, note), shift=RIGHT * 0.2))
            self.animate_then_hold(*animations, seconds=beat.seconds, animate=1.0)
            self.save_poster()
