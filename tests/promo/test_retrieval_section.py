"""The trace's optional `retrieval` section: read from a live server's /metrics, validated, shown by the
architecture scene; traces without it load as before."""

from __future__ import annotations

import io
import socket
import threading
import time

import openai
import pytest
import uvicorn
from astrai.promo import RecordError, Trace, TraceError, architecture_beats, load_trace, save_trace
from astrai.promo.beats import HighlightBeat
from astrai.promo.record import record_trace
from astrai.promo.retrieval import RetrievalStatsError, parse_metrics, scrape

SECTION = {"vector_stores": 2, "passages": 1234, "rag_requests": 40, "rag_prompt_tokens": 50000,
           "rag_cached_tokens": 41000, "cache_hit_share": 0.82, "source": "http://127.0.0.1:8000/metrics"}


def test_traces_without_the_section_load_and_show_no_retrieval(tmp_path, trace_dict):
    assert "retrieval" not in trace_dict
    trace = load_trace(save_trace(Trace.from_dict(trace_dict), tmp_path / "old.json"))
    assert trace.retrieval is None and "retrieval" not in trace.to_dict()
    server = architecture_beats(trace)[1].layer
    assert server.title == "HTTP server" and len(server.facts) == 1


def test_the_section_round_trips_and_reaches_the_architecture_scene(tmp_path, trace_dict):
    trace = load_trace(save_trace(Trace.from_dict({**trace_dict, "retrieval": SECTION}), tmp_path / "t.json"))
    assert trace.retrieval == SECTION
    beats = architecture_beats(trace)
    server = beats[1].layer
    assert server.title == "HTTP server + retrieval" and server.highlight
    assert server.facts == ("OpenAI API + RAG · 1,234 passages in 2 vector stores (HNSW + BM25) · 82% of RAG prompt "
                            "tokens from the prefix cache",)
    highlight = next(b for b in beats if isinstance(b, HighlightBeat))
    assert highlight.notes[0][0] == "server"


@pytest.mark.parametrize(("edit", "message"), [
    ({"passages": -1}, "retrieval.passages must not be negative"),
    ({"cache_hit_share": 1.5}, "must lie in [0, 1]"),
    ({"rag_requests": "many"}, "retrieval.rag_requests"),
])
def test_bad_sections_are_named(trace_dict, edit, message):
    with pytest.raises(TraceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Trace.from_dict({**trace_dict, "retrieval": {**SECTION, **edit}})


def test_parse_metrics_needs_the_rag_metrics():
    with pytest.raises(RetrievalStatsError, match="serves no vector stores"):
        parse_metrics("astrai:prompt_tokens_total 5.0\n")


def test_a_bad_url_fails_before_the_model_loads(tmp_path):
    with pytest.raises(RecordError, match="cannot read http://127.0.0.1:9/metrics"):
        record_trace(tmp_path / "t.json", retrieval_from="http://127.0.0.1:9/v1", progress=False)


def test_scrape_reads_a_live_server(tmp_path):
    """A real app with the embedder and a data folder (no LLM needed for /metrics and vector stores)."""
    from astrai.server import ServerConfig, create_app

    def no_engine():
        raise RuntimeError("not needed here")

    app = create_app(ServerConfig(embedding_model="all-minilm-l6-v2", data_dir=str(tmp_path), api_key="k"),
                     engine_factory=no_engine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert app.state.rag.wait(120)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        f = client.files.create(file=("a.txt", io.BytesIO(b"The lamp was lit in 1871. " * 40)), purpose="assistants")
        client.vector_stores.create(name="promo", file_ids=[f.id])
        stats = scrape(url + "/v1", api_key="k")
        assert (stats["vector_stores"], stats["rag_requests"], stats["cache_hit_share"]) == (1, 0, 0.0)
        assert stats["passages"] >= 1 and stats["source"] == url + "/metrics"
        with pytest.raises(RetrievalStatsError, match="401"):
            scrape(url)
    finally:
        server.should_exit = True
        thread.join(30)
