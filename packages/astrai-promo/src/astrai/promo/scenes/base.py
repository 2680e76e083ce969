"""A Scene that plays a list of beats, reports progress and saves its key frame as a poster."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from manim import Scene
from PIL import Image

from .style import BACKGROUND


class BeatScene(Scene):
    """Subclasses implement `play_beat`; each beat lasts exactly `beat.seconds`."""

    def __init__(self, beats: Sequence, poster: Path | None = None,
                 on_beat: Callable[[], None] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.beats = list(beats)
        self.poster = poster
        self.on_beat = on_beat
        self._poster_saved = False

    def construct(self) -> None:
        self.camera.background_color = BACKGROUND
        for beat in self.beats:
            self.play_beat(beat)
            if self.on_beat:
                self.on_beat()
        if not self._poster_saved:
            self.save_poster()

    def play_beat(self, beat) -> None:
        raise NotImplementedError

    def animate_then_hold(self, *animations, seconds: float, animate: float = 0.6) -> None:
        """Play `animations` for part of the beat and hold the result for the rest."""
        run = min(animate, seconds * 0.6)
        if animations:
            self.play(*animations, run_time=run)
        else:
            run = 0.0
        if seconds - run > 1e-3:
            self.wait(seconds - run)

    def save_poster(self) -> None:
        """Write the frame on screen now as the poster PNG (palette PNG: small enough for docs)."""
        if self.poster is None:
            return
        self.renderer.update_frame(self)
        frame = np.asarray(self.renderer.get_frame())[:, :, :3]
        image = Image.fromarray(frame.astype(np.uint8), "RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        self.poster.parent.mkdir(parents=True, exist_ok=True)
        image.save(self.poster, optimize=True)
        self._poster_saved = True
