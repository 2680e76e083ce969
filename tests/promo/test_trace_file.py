"""The trace file: round trip, and a clear error for every way a file can be unusable."""

from __future__ import annotations

import json

import pytest
from astrai.promo import TRACE_VERSION, Trace, TraceError, load_trace, save_trace


def _write(tmp_path, data) -> str:
    path = tmp_path / "trace.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_round_trip_keeps_every_step(tmp_path, trace_dict):
    path = save_trace(Trace.from_dict(trace_dict), tmp_path / "t.json")
    trace = load_trace(path)
    assert [s["step"] for s in trace.steps] == list(range(7))
    assert trace.throughput["ratio"] == 3.42
    assert trace.steps[2]["page_tables"] == {"r1": [0, 1], "r2": [0, 2]}


def test_optional_event_keys_are_filled(tmp_path, trace_dict):
    for key in ("arrived", "preempted", "phases_ms", "page_tables", "num_waiting"):
        del trace_dict["steps"][1][key]
    del trace_dict["steps"][1]["pages"]["copied"]
    step = load_trace(_write(tmp_path, trace_dict)).steps[1]
    assert step["arrived"] == [] and step["preempted"] == [] and step["page_tables"] == {}
    assert step["pages"]["copied"] == []


def test_corrupt_file_names_the_problem(tmp_path):
    path = _write(tmp_path, '{"format": "astrai-trace", "version": 1, "steps": [')
    with pytest.raises(TraceError, match=r"corrupt: not valid JSON .* line 1"):
        load_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(tmp_path / "nope.json")


def test_other_format_version(tmp_path, trace_dict):
    trace_dict["version"] = TRACE_VERSION + 1
    with pytest.raises(TraceError, match=rf"version {TRACE_VERSION + 1} is not supported.*reads versions 1, 2"):
        load_trace(_write(tmp_path, trace_dict))


def test_not_a_trace(tmp_path):
    with pytest.raises(TraceError, match="not an AstrAI trace"):
        load_trace(_write(tmp_path, {"format": "something-else", "version": 1}))
    with pytest.raises(TraceError, match="must be a JSON object"):
        load_trace(_write(tmp_path, [1, 2, 3]))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("throughput"), "missing field 'throughput'"),
        (lambda d: d["model"].pop("num_kv_heads"), r"missing field model\.num_kv_heads"),
        (lambda d: d["steps"][3].pop("decode"), r"missing field steps\[3\]\.decode"),
        (lambda d: d["requests"][1].pop("output_tokens"), r"missing field requests\[1\]\.output_tokens"),
        (lambda d: d["throughput"]["static"].pop("tokens_per_s"), r"throughput\.static\.tokens_per_s"),
        (lambda d: d["engine"].update(num_pages="many"), r"engine\.num_pages must be int, got str"),
        (lambda d: d["steps"][0]["pages"].update(allocated=[99]), r"page 99, outside the pool of 12"),
        (lambda d: d.update(steps=[]), "no steps"),
    ],
)
def test_missing_or_wrong_fields_are_named(tmp_path, trace_dict, edit, message):
    edit(trace_dict)
    with pytest.raises(TraceError, match=message):
        load_trace(_write(tmp_path, trace_dict))


def test_version_1_trace_is_read_with_its_phases_renamed_for_what_they_timed(tmp_path, trace_dict):
    trace_dict["version"] = 1
    for step in trace_dict["steps"]:  # version 1 called batch building "prefill" and sampling "decode"
        step["phases_ms"] = {"cleanup": 0.1, "refill": 0.2, "prefill": 3.0, "decode": 1.0, "forward": 4.0}
    trace = load_trace(_write(tmp_path, trace_dict))
    assert trace.steps[0]["phases_ms"] == pytest.approx({"schedule": 0.3, "build_batch": 3.0, "forward": 4.0,
                                                         "sample": 1.0})
    saved = json.loads(save_trace(trace, tmp_path / "again.json").read_text())
    assert saved["version"] == TRACE_VERSION == 2  # written back in the current version


def test_version_1_phase_names_in_a_version_2_file_are_refused(tmp_path, trace_dict):
    trace_dict["steps"][2]["phases_ms"] = {"prefill": 3.0}
    with pytest.raises(TraceError, match=r"steps\[2\]\.phases_ms has unknown phase 'prefill'"):
        load_trace(_write(tmp_path, trace_dict))
