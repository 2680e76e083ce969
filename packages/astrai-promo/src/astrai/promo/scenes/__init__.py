"""Manim scenes that draw beats, and the registry mapping scene names to (beats, scene)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..beats import architecture_beats, batching_beats, paged_cache_beats
from .architecture import ArchitectureScene
from .base import BeatScene
from .batching import BatchingScene
from .paged_cache import PagedCacheScene


@dataclass(frozen=True)
class SceneSpec:
    beats: Callable  # (trace, max_seconds) -> list of beats
    scene: type[BeatScene]


SCENES: dict[str, SceneSpec] = {
    "architecture": SceneSpec(architecture_beats, ArchitectureScene),
    "batching": SceneSpec(batching_beats, BatchingScene),
    "paged-cache": SceneSpec(paged_cache_beats, PagedCacheScene),
}

__all__ = ["SCENES", "SceneSpec", "BeatScene", "ArchitectureScene", "BatchingScene", "PagedCacheScene"]
