"""Pure functions trace -> beats: what each scene shows, decided before any drawing."""

from .architecture import ArchitectureBeat, HighlightBeat, Layer, LayerBeat, TitleBeat, architecture_beats
from .batching import BatchingBeat, BatchStepBeat, Lane, LoopBeat, Phase, ThroughputBeat, batching_beats
from .paged_cache import (
    Cell,
    PagedCacheBeat,
    PoolIntroBeat,
    PoolStepBeat,
    PoolSummaryBeat,
    TableRow,
    paged_cache_beats,
)

__all__ = [
    "ArchitectureBeat", "HighlightBeat", "Layer", "LayerBeat", "TitleBeat", "architecture_beats",
    "BatchingBeat", "BatchStepBeat", "Lane", "LoopBeat", "Phase", "ThroughputBeat", "batching_beats",
    "Cell", "PagedCacheBeat", "PoolIntroBeat", "PoolStepBeat", "PoolSummaryBeat", "TableRow", "paged_cache_beats",
]
