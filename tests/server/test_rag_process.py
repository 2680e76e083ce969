"""Retrieval as a real `astrai serve` process: SIGKILL during ingestion loses no acknowledged passage, and
serving without the rag extra never imports astrai.retrieval."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import openai

from .conftest import API_KEY

ENGINE = ["--dtype", "float32", "--num-pages", "32", "--max-model-len", "256", "--max-num-seqs", "2"]


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "ASTRAI_API_KEY": API_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "astrai.server.cli", "serve", "--port", "0", *ENGINE,
                             "--data-dir", data_dir, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("the server printed no URL")


def wait_ready(client: openai.OpenAI) -> None:
    """Until the vector stores are open (503 while the embedder loads and the stores open)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            client.vector_stores.list()
            return
        except openai.InternalServerError:
            assert time.monotonic() < deadline, "vector stores never opened"
            time.sleep(0.1)


def document(i: int) -> str:
    """Text that is found by its own marker word and nothing else's."""
    return f"Record {i}: the marker word is zq{i}xv. " + " ".join(f"filler{i}w{j}" for j in range(150))


def test_sigkill_during_ingest_loses_no_acknowledged_passage(tmp_path):
    data = str(tmp_path / "data")
    proc, url = start_server(data)
    acknowledged: list[tuple[str, int]] = []
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
        wait_ready(client)
        store = client.vector_stores.create(name="durable").id
        stop = threading.Event()
        errors: list[BaseException] = []

        def ingest() -> None:
            i = 0
            while not stop.is_set():
                try:
                    f = client.files.create(file=(f"r{i}.txt", io.BytesIO(document(i).encode())),
                                            purpose="assistants")
                    done = client.vector_stores.files.create(vector_store_id=store, file_id=f.id)
                except (openai.APIConnectionError, openai.APITimeoutError):
                    return  # the server died under us: that request was never acknowledged
                except BaseException as exc:  # anything else fails the test
                    errors.append(exc)
                    return
                if done.status == "completed":
                    acknowledged.append((f.id, i))
                i += 1

        writer = threading.Thread(target=ingest)
        writer.start()
        while len(acknowledged) < 3 and writer.is_alive():
            writer.join(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-ingest: the writer has a request in flight or about to be
        proc.wait(30)
        stop.set()
        writer.join(60)
        assert not errors, errors
        assert len(acknowledged) >= 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)

    proc, url = start_server(data)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
        wait_ready(client)
        files = {f.id: f for f in client.vector_stores.files.list(vector_store_id=store, limit=100)}
        for file_id, i in acknowledged:
            assert files[file_id].status == "completed"
            hits = list(client.vector_stores.search(vector_store_id=store, query=f"zq{i}xv", max_num_results=1,
                                                    ranking_options={"mode": "sparse"}))
            assert hits and hits[0].file_id == file_id and f"zq{i}xv" in hits[0].content[0].text
        for f in files.values():  # the one cut short is reported, not half there
            assert f.status in ("completed", "failed")
    finally:
        proc.kill()
        proc.wait(30)


# A Python prelude that makes astrai.retrieval look uninstalled: what a server without the rag extra sees.
HIDE_RETRIEVAL = textwrap.dedent("""
    import importlib.abc, sys
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "astrai.retrieval" or name.startswith("astrai.retrieval."):
                raise ModuleNotFoundError(name)
            return None
    sys.meta_path.insert(0, Hide())
    import importlib.util
    importlib.util.find_spec = (lambda original: lambda name, *a: None if name.startswith("astrai.retrieval")
                                else original(name, *a))(importlib.util.find_spec)
""")


def test_serving_without_the_rag_extra_never_imports_retrieval(tmp_path):
    """With astrai.retrieval hidden, embeddings (the encoder comes through astrai.retrieval), files
    and vector stores answer 501 naming the extra, and the embedding model is not listed."""
    script = HIDE_RETRIEVAL + textwrap.dedent(f"""
        from fastapi.testclient import TestClient
        from astrai.server import ServerConfig, create_app
        config = ServerConfig(embedding_model="all-minilm-l6-v2", data_dir={str(tmp_path)!r})
        def no_engine():
            raise RuntimeError("no LLM in this test")
        app = create_app(config, engine_factory=no_engine)
        assert app.state.embedder is None
        with TestClient(app) as http:
            r = http.post("/v1/embeddings", json={{"model": "all-minilm-l6-v2", "input": "hi"}})
            assert r.status_code == 501, r.text
            assert r.json()["error"]["message"] == (
                "POST /v1/embeddings is not available: embeddings need the rag extra (astrai-retrieval is not "
                "installed): pip install 'astrai-server[rag]'"), r.text
            assert r.json()["error"]["code"] == "not_implemented"
            models = [m["id"] for m in http.get("/v1/models").json()["data"]]
            assert "all-minilm-l6-v2" not in models, models
            r = http.get("/v1/vector_stores")
            assert r.status_code == 501 and "astrai-server[rag]" in r.json()["error"]["message"], r.text
            r = http.post("/v1/files", files={{"file": ("a.txt", b"x")}}, data={{"purpose": "assistants"}})
            assert r.status_code == 501, r.text
        assert not any(m.startswith("astrai.retrieval") for m in sys.modules), sorted(sys.modules)
        assert "astrai.server.rag" not in sys.modules and "astrai.server.embedder" not in sys.modules
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_embedding_flags_are_checked_before_serving():
    cli = [sys.executable, "-m", "astrai.server.cli", "serve", "--port", "0"]
    both = subprocess.run([*cli, "--embedding-model", "x", "--no-embeddings"], capture_output=True, text=True,
                          timeout=120)
    assert both.returncode == 2 and "contradict each other" in both.stderr
    missing = subprocess.run([*cli, "--embedding-model", "/nonexistent/folder"], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1
    assert "could not load embedding model '/nonexistent/folder': not a built-in encoder" in missing.stderr


def test_an_embedding_model_without_the_rag_extra_is_refused_before_serving():
    """`--embedding-model` asks for what only the rag extra serves: one line naming it, exit 2; a plain
    `astrai serve` without the extra is not refused (it then answers 501 on /v1/embeddings)."""
    script = HIDE_RETRIEVAL + textwrap.dedent("""
        from astrai.server.cli import main
        code = main(["serve", "--port", "0", "--embedding-model", "all-minilm-l6-v2"])
        assert not any(m.startswith("astrai.retrieval") for m in sys.modules), sorted(sys.modules)
        sys.exit(code)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == ""
    assert result.stderr == ("error: --embedding-model: embeddings need the rag extra (astrai-retrieval is not "
                             "installed): pip install 'astrai-server[rag]'\n")


def test_an_unusable_data_folder_turns_off_only_files_and_stores(tmp_path):
    from astrai.server import ServerConfig, create_app
    from fastapi.testclient import TestClient

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    def no_engine():
        raise RuntimeError("no LLM in this test")

    app = create_app(ServerConfig(data_dir=str(blocker / "data"), embedding_model="all-minilm-l6-v2"),
                     engine_factory=no_engine)
    with TestClient(app) as http:
        response = http.get("/v1/vector_stores")
        assert response.status_code == 501
        assert f"the data folder {str(blocker / 'data')!r} cannot be used" in response.json()["error"]["message"]
        assert app.state.embedder.wait(120)
        assert http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"}).status_code == 200
