"""astrai.promo — record live engine traces and render Manim videos from them.

Manim is imported only when rendering. Trace files are validated against the engine's own
trace schema (`astrai.scheduler.TraceEvent`), so importing this package imports astrai.scheduler.
"""

from .beats import architecture_beats, batching_beats, paged_cache_beats
from .record import WORKLOADS, RecordError, Workload, WorkloadRequest, record_trace
from .render import QUALITIES, RenderedScene, RenderError, render_all, render_scene, scene_names
from .trace import TRACE_FORMAT, TRACE_VERSION, Trace, TraceError, load_trace, save_trace

__all__ = [
    "QUALITIES",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "WORKLOADS",
    "RecordError",
    "RenderError",
    "RenderedScene",
    "Trace",
    "TraceError",
    "Workload",
    "WorkloadRequest",
    "architecture_beats",
    "batching_beats",
    "load_trace",
    "paged_cache_beats",
    "record_trace",
    "render_all",
    "render_scene",
    "save_trace",
    "scene_names",
]
