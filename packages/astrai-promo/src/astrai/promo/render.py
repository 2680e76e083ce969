"""Render scenes to DIR/<scene>.mp4 plus a poster DIR/<scene>.png, programmatically.

Manim is the optional `render` extra: without it, rendering stops with one message naming the
pip command and, where they are missing, the system packages Manim builds against.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .system import describe, missing_build_requirements
from .trace import Trace

QUALITIES: dict[str, tuple[int, int, int]] = {
    "low": (854, 480, 15),
    "medium": (1280, 720, 30),
    "high": (1920, 1080, 60),
}


class RenderError(RuntimeError):
    """A render that cannot run or did not produce its files; the message names the cause."""


@dataclass(frozen=True)
class RenderedScene:
    name: str
    video: Path
    poster: Path
    seconds: float  # planned length: the sum of the beats' durations


def require_manim() -> None:
    """Raise RenderError naming what to install when Manim (the `render` extra) cannot be imported."""
    try:
        import manim  # noqa: F401
    except ModuleNotFoundError as exc:
        message = (f"rendering needs Manim, which is not installed (no module named {exc.name!r}): "
                   "pip install 'astrai-promo[render]'")
        gaps = missing_build_requirements()
        if gaps:
            message += ("\npip builds Manim's manimpango and pycairo from source; first install what they build "
                        "against, " + describe(gaps))
        raise RenderError(message) from exc
    except ImportError as exc:  # installed, but a shared library it links against is gone
        raise RenderError(f"Manim is installed but cannot be imported: {exc}\nIt needs the cairo and pango "
                          "libraries (Debian/Ubuntu: apt-get install libcairo2 libpangocairo-1.0-0).") from exc


def _scenes() -> dict:
    require_manim()
    from .scenes import SCENES

    return SCENES


def scene_names() -> list[str]:
    return list(_scenes())


def render_scene(trace: Trace, name: str, out_dir: str | Path, quality: str = "low",
                 max_seconds: float | None = None, progress: bool = True) -> RenderedScene:
    """Render one scene. `max_seconds` caps its length (beats are sampled and shortened to fit)."""
    scenes = _scenes()
    if name not in scenes:
        raise RenderError(f"unknown scene {name!r}; choose one of: {', '.join(scenes)} or all")
    if quality not in QUALITIES:
        raise RenderError(f"unknown quality {quality!r}; choose one of: {', '.join(QUALITIES)}")
    from manim import tempconfig

    spec = scenes[name]
    beats = spec.beats(trace, max_seconds)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video, poster = out_dir / f"{name}.mp4", out_dir / f"{name}.png"
    width, height, fps = QUALITIES[quality]
    with tempfile.TemporaryDirectory(prefix="astrai-promo-") as media, tqdm(
        total=len(beats), desc=f"render {name}", unit="beat", disable=not progress, leave=True
    ) as bar:
        settings = {
            "media_dir": media,
            "pixel_width": width,
            "pixel_height": height,
            "frame_rate": fps,
            "frame_height": 8.0,
            "frame_width": 8.0 * width / height,
            "disable_caching": True,
            "output_file": name,
            "verbosity": "ERROR",
            "progress_bar": "none",
            "write_to_movie": True,
            "format": "mp4",
        }
        with tempconfig(settings):
            scene = spec.scene(beats, poster=poster, on_beat=lambda: bar.update(1))
            try:
                scene.render()
            except FileNotFoundError as exc:
                raise RenderError(f"rendering {name} failed: {exc}") from exc
            produced = Path(scene.renderer.file_writer.movie_file_path)
        if not produced.is_file():
            raise RenderError(f"Manim did not write a video for {name} (expected {produced})")
        shutil.move(str(produced), video)
    if not poster.is_file():
        raise RenderError(f"the {name} scene did not save its poster {poster}")
    return RenderedScene(name, video, poster, sum(b.seconds for b in beats))


def render_all(trace: Trace, names: list[str], out_dir: str | Path, quality: str = "low",
               max_seconds: float | None = None, progress: bool = True) -> list[RenderedScene]:
    return [render_scene(trace, n, out_dir, quality, max_seconds, progress) for n in names]
