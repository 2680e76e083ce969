"""`astrai serve --replicas 2` on a real local Ray instance (127.0.0.1), as users run it.

One module-scoped server (a real subprocess; Ray, Serve and two engine replicas of a tiny random
llama) serves every test in order; the last one stops it with SIGTERM and checks that nothing
it started is left running. The tiny model keeps replica start-up and restarts to seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
import transformers
from astrai.scheduler import Engine, SamplingParams
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers

VOCAB = 256
PAGE = 16
PER_REPLICA_SEQS = 2
START_TIMEOUT_S = 300
GRACE_S = 2  # --shutdown-timeout


def write_tiny_llama(directory: Path) -> None:
    """A tiny random llama checkpoint with a word-level tokenizer ("t0" .. "t255")."""
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)
    backend = BackendTokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "t1", "eos_token": "t2",
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}))  # for the RAG test


def words(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Ray's GCS, raylet, workers...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    model: str
    ray_address: str
    output: list[str] = field(default_factory=list)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=30).json()

    def running(self) -> list[dict]:
        return [r for r in self.health().get("replicas", []) if r["state"] == "running"]

    def complete(self, prompt: str, **fields) -> httpx.Response:
        return httpx.post(self.url + "/v1/completions", timeout=120,
                          json={"model": self.model, "prompt": prompt, "max_tokens": 4, **fields})

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            match = re.match(r"^([\w:]+)(?:\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    model_dir = tmp_path_factory.mktemp("tiny-llama")
    write_tiny_llama(model_dir)
    command = [sys.executable, "-m", "astrai.server.cli", "serve", "--replicas", "2", "--model", str(model_dir),
               "--port", "0", "--dtype", "float32", "--max-num-seqs", str(PER_REPLICA_SEQS), "--page-size", str(PAGE),
               "--num-pages", "320", "--max-model-len", "5000", "--max-queue", "32", "--shutdown-timeout",
               str(GRACE_S), "--data-dir", str(tmp_path_factory.mktemp("rag-data"))]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    found = threading.Event()

    def drain() -> None:  # Ray forwards replica logs to the front end's stdout: never let the pipe fill
        for line in proc.stdout:
            output.append(line)
            if "OpenAI base URL" in line:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert found.wait(START_TIMEOUT_S), "no URL printed:\n" + "".join(output[-40:])
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", next(line for line in output if "OpenAI base URL" in line))
        ray_address = re.search(r"Ray at (\S+)", next(line for line in output if "AstrAI: Ray at" in line))
        served = Served(proc, url.group(1), str(model_dir), ray_address.group(1), output)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(served.running()) < 2:
            assert proc.poll() is None, "server exited:\n" + "".join(output[-40:])
            assert time.monotonic() < deadline, "replicas never came up:\n" + "".join(output[-40:])
            time.sleep(0.5)
        yield served
    finally:
        if proc.poll() is None:
            for pid in descendants(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
        proc.wait(60)


def test_health_lists_each_replica_with_its_process(served):
    health = served.health()
    assert health["status"] == "ok" and health["model"] == served.model
    replicas = health["replicas"]
    assert len(replicas) == 2 and len({r["replica"] for r in replicas}) == 2
    pids = {r["pid"] for r in replicas}
    assert len(pids) == 2 and served.proc.pid not in pids
    assert pids <= descendants(served.proc.pid)  # real processes, started under this server
    assert health["deployment"]["replica_states"] == {"RUNNING": 2}


def test_shared_prefixes_stick_to_one_replica_and_both_replicas_serve(served):
    systems = [[3 + (7 * s + 13 * i) % (VOCAB - 3) for i in range(6 * PAGE)] for s in range(4)]
    seen: dict[int, list[str]] = {s: [] for s in range(len(systems))}
    for round_ in range(3):
        for s, system in enumerate(systems):
            reply = served.complete(words(system + [10 + round_, 20 + s]))
            assert reply.status_code == 200, reply.text
            seen[s].append(reply.headers["x-astrai-replica"])
            cached = reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            if round_ > 0:  # the replica that holds the prefix served it again: its radix cache hit
                assert cached >= 5 * PAGE, (s, round_, cached)
    for s, replicas in seen.items():
        assert len(set(replicas)) == 1, f"prefix {s} moved between replicas: {replicas}"
    assert len({replicas[0] for replicas in seen.values()}) == 2  # the four prefixes spread over both


def test_rag_prompts_with_the_same_passages_go_to_the_replica_that_caches_them(served):
    """Vector stores live in the front end; the passage-first prompt layout makes the prefix router keep
    requests that retrieve the same passages on one replica, whose radix cache then serves them."""
    import io

    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0, timeout=120)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:  # the front end's embedder and stores open in the background
        try:
            store = client.vector_stores.create(name="rag", chunking_strategy={
                "type": "static", "static": {"max_chunk_size_tokens": 1000, "chunk_overlap_tokens": 0}})
            break
        except openai.InternalServerError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    for d in range(2):
        text = words([3 + (11 * d + 5 * i) % (VOCAB - 3) for i in range(4 * PAGE)])
        f = client.files.create(file=(f"d{d}.txt", io.BytesIO(text.encode())), purpose="assistants")
        assert client.vector_stores.files.create(vector_store_id=store.id, file_id=f.id).status == "completed"
    replicas, cached = [], []
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model=served.model, max_tokens=1, messages=[{"role": "user", "content": words([40 + i, 41, 42])}],
            extra_body={"file_search": {"vector_store_ids": [store.id], "max_num_results": 2}})
        replicas.append(raw.headers["x-astrai-replica"])
        reply = raw.parse()
        assert len(reply.model_extra["file_search"]["results"]) == 2
        cached.append(reply.usage.prompt_tokens_details.cached_tokens)
    assert len(set(replicas)) == 1, replicas
    assert min(cached[1:]) >= 8 * PAGE, cached  # both passages (4 pages each) came from that replica's cache


def test_metrics_cover_every_replica(served):
    live = {r["replica"] for r in served.running()}
    for replica in live:
        assert served.metric("astrai:prompt_tokens_total", replica=replica) > 0
    summed = served.metric("astrai:prompt_tokens_total")
    assert summed == sum(served.metric("astrai:prompt_tokens_total", replica=r) for r in live)
    assert served.metric("astrai:replicas_running") == 2


DRIVER = """
import asyncio, json, sys
import ray
from ray import serve
from astrai.scheduler import SamplingParams
from astrai.server.replicas import ReplicaSetEngine

address, prompts = sys.argv[1], json.loads(sys.argv[2])
params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
engine = ReplicaSetEngine.connect(serve.get_deployment_handle("AstraiEngine", app_name="astrai"), num_replicas=2)
generated = [out.token_ids for out in engine.generate(prompts, params)]

async def streamed():
    deltas, done = [], asyncio.Event()
    def sink(out):
        deltas.append(out)
        if out.finished:
            done.set()
    engine.add_request(prompts[1], params, sink=sink, stream=True)
    await asyncio.wait_for(done.wait(), 60)
    return deltas

deltas = asyncio.run(streamed())
print(json.dumps({"generated": generated, "streamed": [t for d in deltas for t in d.token_ids],
                  "finish": deltas[-1].finish_reason, "idle": engine.wait_idle(30),
                  "max_model_len": [engine.describe().max_model_len, engine.max_model_len]}))
ray.shutdown()
"""


def test_the_engine_interface_over_replicas_gives_one_engine_s_tokens(served):
    """ReplicaSetEngine from Python, in another driver on the same cluster: generate, add_request
    with a sink, wait_idle and describe; token for token what one local Engine produces greedily."""
    prompts = [[1, 5, 6, 7, 8], [1, 9, 9, 40], [1, 200, 3]]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    with Engine.from_pretrained(served.model, dtype="float32") as local:
        expected = [out.token_ids for out in local.generate(prompts, params)]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # the local instance runs Ray's default token auth
    done = subprocess.run([sys.executable, "-c", DRIVER, served.ray_address, json.dumps(prompts)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["generated"] == expected
    assert result["streamed"] == expected[1] and result["finish"] == "length"
    assert result["idle"] and result["max_model_len"] == [5000, 5000]


def stream(served: Served, prompt: str, max_tokens: int, record: dict, stop: threading.Event | None = None) -> None:
    """Stream a completion into `record`: replica, token chunks (with arrival times), error, [DONE], usage."""
    record.update(chunks=[], error=None, done=False, usage=None, replica=None)
    body = {"model": served.model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", served.url + "/v1/completions", json=body, timeout=120) as response:
        record["status"] = response.status_code
        record["replica"] = response.headers.get("x-astrai-replica")
        for line in response.iter_lines():
            if not line:
                continue
            if line == "data: [DONE]":
                record["done"] = True
                continue
            payload = json.loads(line.removeprefix("data: "))
            if "error" in payload:
                record["error"] = payload["error"]
            elif payload.get("usage"):
                record["usage"] = payload["usage"]
            elif payload["choices"][0]["text"]:
                record["chunks"].append(time.monotonic())
            if stop is not None and stop.is_set():
                return  # hang up


def test_client_disconnect_aborts_on_the_owning_replica(served):
    record: dict = {}
    stop = threading.Event()
    hang_up = threading.Thread(target=stream, args=(served, words([5, 6, 7]), 900, record, stop))
    hang_up.start()
    deadline = time.monotonic() + 60
    while not record.get("chunks"):
        assert time.monotonic() < deadline and hang_up.is_alive()
        time.sleep(0.02)
    owner = record["replica"]
    aborted_before = served.metric("astrai:engine_requests_finished_total", replica=owner, finished_reason="abort")
    stop.set()
    hang_up.join(30)
    deadline = time.monotonic() + 30
    while served.metric("astrai:engine_requests_finished_total", replica=owner,
                        finished_reason="abort") < aborted_before + 1:
        assert time.monotonic() < deadline, "the owning replica never aborted the request"
        time.sleep(0.1)
    assert served.metric("astrai:num_requests_running", replica=owner) == 0


def test_killed_replica_is_restarted_and_requests_not_started_are_retried(served):
    before = {r["replica"]: r["pid"] for r in served.running()}
    retries_before = served.metric("astrai:replica_retries_total")
    records = [{} for _ in range(10)]
    threads = [threading.Thread(target=stream, args=(served, words([4 + i, 9, 9, 9]), 150, rec))
               for i, rec in enumerate(records)]
    for thread in threads:
        thread.start()
    # Kill a replica while it runs a full batch and has requests waiting behind it.
    victim = None
    deadline = time.monotonic() + 60
    while victim is None:
        assert time.monotonic() < deadline, f"replicas never both had a queue: {served.health()}"
        replicas = served.health()["replicas"]
        busy = [r for r in replicas if r.get("num_running") == PER_REPLICA_SEQS and r.get("num_waiting", 0) >= 1]
        if len(busy) == 2:
            victim = busy[0]
    os.kill(victim["pid"], signal.SIGKILL)
    # The endpoint keeps answering meanwhile, from the other replica.
    during = served.complete(words([8, 8, 8]))
    assert during.status_code == 200 and during.headers["x-astrai-replica"] != victim["replica"]
    for thread in threads:
        thread.join(120)

    failed = [r for r in records if r["error"] is not None]
    for rec in records:
        assert rec["status"] == 200 and rec["done"], rec  # every stream ends with [DONE]
        if rec["error"] is None:
            assert rec["usage"]["completion_tokens"] == 150, rec  # finished in full, wherever it ran
        else:  # only requests already streaming on the dead replica may fail, with an error event
            assert rec["replica"] == victim["replica"], rec
            assert rec["chunks"], rec  # it had sent tokens (those were made before the kill: it is dead since)
            assert "died" in rec["error"]["message"] and rec["error"]["code"] == "engine_unavailable"
    assert len(failed) <= PER_REPLICA_SEQS
    assert served.metric("astrai:replica_retries_total") >= retries_before + 1  # the waiting ones went elsewhere

    # Ray Serve replaces the dead replica: two running again, one of them a new process.
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(served.running()) < 2:
        assert time.monotonic() < deadline, f"the replica was not restarted: {served.health()}"
        time.sleep(0.5)
    after = {r["replica"]: r["pid"] for r in served.running()}
    assert victim["replica"] not in after and not alive(victim["pid"])
    survivor = next(name for name in before if name != victim["replica"])
    assert after[survivor] == before[survivor]  # the other replica was never touched


def test_with_no_replica_alive_the_endpoint_answers_503_with_retry_after(served):
    pids = [r["pid"] for r in served.running()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # the first request may still meet a replica the router has not yet seen die
        reply = served.complete(words([7, 7]))
        if reply.status_code == 503 and reply.json()["error"]["code"] == "no_replica_alive":
            break
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.05)
    assert reply.headers["retry-after"] == "2"
    health = httpx.get(served.url + "/health", timeout=30)
    assert health.status_code == 503 and health.headers["retry-after"] == "2"
    assert health.json()["status"] == "unavailable"
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(served.running()) < 2:  # Ray Serve brings both back; the endpoint serves again
        assert time.monotonic() < deadline, f"replicas were not restarted: {served.health()}"
        time.sleep(0.5)
    assert served.complete(words([7, 7])).status_code == 200


def test_sigterm_drains_then_stops_everything_it_started(served):
    started = descendants(served.proc.pid)
    names = {open(f"/proc/{pid}/comm").read().strip() for pid in started if alive(pid)}
    assert {"raylet", "gcs_server"} <= names, names
    short: dict = {}
    long: dict = {}
    streams = [threading.Thread(target=stream, args=(served, words([6, 6]), 20, short)),
               threading.Thread(target=stream, args=(served, words([5, 5]), 4900, long))]
    for thread in streams:
        thread.start()
    deadline = time.monotonic() + 60
    while not (short.get("chunks") and long.get("chunks")):
        assert time.monotonic() < deadline and all(t.is_alive() for t in streams)
        time.sleep(0.02)
    served.proc.send_signal(signal.SIGTERM)
    for thread in streams:
        thread.join(60)
    # In flight at SIGTERM: the short one finishes within the grace period, the long one is cut at
    # its end with an error event and [DONE], as the single-process server does.
    assert short["error"] is None and short["done"] and short["usage"]["completion_tokens"] == 20
    assert long["done"] and long["error"]["code"] == "aborted", long["error"]
    assert served.proc.wait(90) == 0
    deadline = time.monotonic() + 30
    while [pid for pid in started if alive(pid)]:
        assert time.monotonic() < deadline, [open(f"/proc/{p}/cmdline").read() for p in started if alive(p)]
        time.sleep(0.2)
