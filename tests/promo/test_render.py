"""Must show: a live recorded trace, rendered for real at low quality, gives watchable videos
and non-blank posters. Also the CLI's clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from astrai.promo import load_trace
from astrai.promo.cli import main
from astrai.promo.replay import replay_pages, replay_requests
from PIL import Image

SCENES = ("architecture", "batching", "paged-cache")


@pytest.fixture(scope="session")
def recorded_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("promo-trace") / "trace.json"
    assert main(["record", "--out", str(path), "--workload", "small", "--quiet"]) == 0
    return path


@pytest.fixture(scope="session")
def rendered(recorded_trace, tmp_path_factory) -> Path:
    """All scenes, rendered with an empty PATH: Manim writes MP4 through PyAV's own FFmpeg
    libraries, so no ffmpeg program (and no Debian ffmpeg package) is needed."""
    out = tmp_path_factory.mktemp("promo-videos")
    argv = ["render", "--trace", str(recorded_trace), "--scene", "all", "--quality", "low", "--out", str(out),
            "--max-seconds", "7", "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
        assert shutil.which("ffmpeg") is None
        assert main(argv) == 0
    return out


def _probe(path: Path) -> tuple[float, int, int]:
    """(seconds, width, height) of the video, read by PyAV (Manim's own writer library)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return container.duration / av.time_base, video.codec_context.width, video.codec_context.height


def test_recorded_trace_is_a_faithful_live_run(recorded_trace):
    trace = load_trace(recorded_trace)
    assert trace.model["name"] == "smollm2-135m-instruct"
    assert trace.model["num_layers"] == 30 and trace.model["num_kv_heads"] == 3
    assert trace.model["num_parameters"] > 100_000_000
    assert {"astrai-scheduler", "astrai-promo"} <= set(trace.packages)
    ids = [r["request_id"] for r in trace.requests]
    finished = {e["request_id"]: e for s in trace.steps for e in s["finished"]}
    assert set(finished) == set(ids)
    # requests join while others decode, and leave while others keep running
    assert any(s["arrived"] and s["decode"] for s in trace.steps)
    assert any(s["finished"] and s["page_tables"] for s in trace.steps)
    # the shared system prompt is served from the prefix cache
    assert sum(len(s["pages"]["shared"]) for s in trace.steps) > 0
    # replaying the page events reproduces the engine's own free-page count at every step
    assert [p.num_free for p in replay_pages(trace)] == [s["num_free_pages"] for s in trace.steps]
    # counting tokens from the events reproduces each request's output length
    last = replay_requests(trace, [len(trace.steps) - 1])[len(trace.steps) - 1]
    by_id = {r["request_id"]: r for r in trace.requests}
    for rid in ids:
        assert last[rid].tokens_out == by_id[rid]["output_tokens"] == finished[rid]["output_tokens"]
    tp = trace.throughput
    assert tp["static"]["tokens"] == tp["continuous"]["tokens"] == sum(r["output_tokens"] for r in trace.requests)
    assert tp["ratio"] == pytest.approx(tp["continuous"]["tokens_per_s"] / tp["static"]["tokens_per_s"], rel=1e-2)


@pytest.mark.parametrize("scene", SCENES)
def test_video_is_a_real_low_quality_render(rendered, scene):
    seconds, width, height = _probe(rendered / f"{scene}.mp4")
    assert seconds >= 5.0
    assert (width, height) == (854, 480)


@pytest.mark.parametrize("scene", SCENES)
def test_poster_is_not_blank(rendered, scene):
    image = Image.open(rendered / f"{scene}.png").convert("RGB")
    assert image.size == (854, 480)
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 10.0  # text and boxes on the background, not a flat frame
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16


def test_corrupt_trace_is_a_clear_cli_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["render", "--trace", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "is corrupt: not valid JSON" in capsys.readouterr().err


def test_other_version_is_a_clear_cli_error(tmp_path, capsys, recorded_trace):
    data = json.loads(recorded_trace.read_text())
    data["version"] = 99
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert main(["render", "--trace", str(old), "--out", str(tmp_path / "out")]) == 2
    assert "version 99 is not supported" in capsys.readouterr().err


def test_bad_model_is_a_clear_record_error(tmp_path, capsys):
    missing = tmp_path / "missing.gguf"
    assert main(["record", "--out", str(tmp_path / "t.json"), "--model", str(missing), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "missing.gguf" in err
