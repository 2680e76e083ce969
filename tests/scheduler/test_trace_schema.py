"""The trace event schema: one definition that reads what the engine writes, fills optional
keys, maps version-1 phase names, and names the first bad field."""

import pytest
from astrai.cache import PAGE_EVENT_KINDS
from astrai.scheduler import PHASES, TRACE_EVENT_VERSION, TraceEvent, TraceSchemaError


def event(**changes):
    data = {
        "step": 3, "time": 1.5,
        "phases_ms": {"schedule": 0.3, "build_batch": 0.2, "forward": 7.0, "sample": 0.9},
        "prefill": [{"request_id": "a", "num_tokens": 5, "cached_tokens": 4, "start": 4}],
        "decode": ["b"], "arrived": ["a"],
        "finished": [{"request_id": "b", "finish_reason": "length", "output_tokens": 2}],
        "preempted": [],
        "pages": {"allocated": [1], "shared": [0], "copied": [[0, 2]], "freed": [], "evicted": []},
        "page_tables": {"a": [0, 1]}, "num_waiting": 0, "num_running": 2, "num_free_pages": 5,
        "num_cached_pages": 1, "num_pages": 8,
    }
    data.update(changes)
    return data


def test_round_trip_and_page_kinds_come_from_the_cache():
    assert TraceEvent.from_dict(event()).to_dict() == event()
    assert tuple(TraceEvent.from_dict(event(pages={})).pages) == PAGE_EVENT_KINDS
    assert TRACE_EVENT_VERSION == 2 and PHASES == ("schedule", "build_batch", "forward", "sample")


def test_speculation_records_are_optional_and_round_trip():
    assert TraceEvent.from_dict(event()).speculation == []
    record = {"request_id": "b", "proposed": 5, "accepted": 3}
    with_draft = event(speculation=[record])
    ev = TraceEvent.from_dict(with_draft)
    assert ev.speculation == [record] and ev.to_dict() == with_draft


def test_optional_keys_are_filled():
    minimal = {"step": 0, "time": 0, "prefill": [{"request_id": "a", "num_tokens": 3}], "decode": [],
               "finished": [{"request_id": "a"}], "pages": {}, "num_free_pages": 4}
    ev = TraceEvent.from_dict(minimal, num_pages=8)
    assert ev.prefill == [{"request_id": "a", "num_tokens": 3, "cached_tokens": 0, "start": 0}]
    assert ev.finished == [{"request_id": "a", "finish_reason": None, "output_tokens": None}]
    assert (ev.arrived, ev.preempted, ev.phases_ms, ev.page_tables) == ([], [], {}, {})
    assert (ev.num_running, ev.num_pages, ev.pages["copied"]) == (1, 8, [])


def test_version_1_phases_are_mapped_onto_what_they_timed():
    v1 = event(phases_ms={"cleanup": 0.1, "refill": 0.2, "prefill": 5.0, "decode": 3.0, "forward": 7.5})
    phases = TraceEvent.from_dict(v1, version=1).phases_ms
    assert phases == pytest.approx({"schedule": 0.3, "build_batch": 5.0, "forward": 7.5, "sample": 3.0})
    with pytest.raises(TraceSchemaError, match=r"unknown phase 'cleanup'; version 2 phases"):
        TraceEvent.from_dict(v1)
    with pytest.raises(TraceSchemaError, match="version 7 is not supported"):
        TraceEvent.from_dict(event(), version=7)


@pytest.mark.parametrize(("changes", "message"), [
    ({"decode": None}, r"field ev\.decode must be list, got NoneType"),
    ({"decode": [1]}, r"ev\.decode must be a list of request ids"),
    ({"prefill": [{"request_id": "a"}]}, r"missing field ev\.prefill\[0\]\.num_tokens"),
    ({"step": True}, r"field ev\.step must be int, got bool"),
    ({"pages": {"allocated": [9]}}, r"ev\.pages\.allocated holds page 9, outside the pool of 8"),
    ({"pages": {"copied": [[1]]}}, r"\[source, destination\] page pairs"),
    ({"pages": {"moved": []}}, r"unknown event kind 'moved'"),
    ({"phases_ms": {"forward": "fast"}}, r"ev\.phases_ms\.forward must be a number"),
    ({"speculation": [{"request_id": "b", "proposed": 2}]}, r"missing field ev\.speculation\[0\]\.accepted"),
    ({"speculation": [{"request_id": "b", "proposed": 2, "accepted": 3}]},
     r"ev\.speculation\[0\]: accepted \(3\) must lie in \[0, proposed \(2\)\]"),
])
def test_bad_fields_are_named(changes, message):
    with pytest.raises(TraceSchemaError, match=message):
        TraceEvent.from_dict(event(**changes), where="ev")
