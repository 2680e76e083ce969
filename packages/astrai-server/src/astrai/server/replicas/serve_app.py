"""The same application for Ray Serve's own deployment tools (`serve run`, `serve deploy`, config files).

    serve run astrai.server.replicas.serve_app:build_app model=smollm2-135m-instruct replicas=2

Here Ray Serve's HTTP proxy takes the requests and hands them to `OpenAIIngress`, a deployment
whose ASGI app is `create_replica_app`: the same app, middleware and `ReplicaSetEngine` that
`astrai serve --replicas N` runs in its own process, in front of the same engine deployment.
`build_app` takes the `args` of a Serve config file (strings from the command line are fine).
"""

from __future__ import annotations

from typing import Any

import ray
from astrai.server.config import DEFAULT_MODEL, ServerConfig
from astrai.server.replicas.http import create_replica_app
from astrai.server.replicas.launch import ReplicaOptions, engine_application
from astrai.server.replicas.replica_set import ReplicaSetEngine
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

# Engine settings `build_app` accepts (with the types they are converted to), as `astrai serve` names them.
_ENGINE_ARGS: dict[str, type] = {"dtype": str, "device": str, "max_num_seqs": int, "max_num_batched_tokens": int,
                                 "max_model_len": int, "page_size": int, "num_pages": int, "scheduling": str}
_SERVER_ARGS: dict[str, type] = {"served_model_name": str, "api_key": str, "max_queue": int,
                                 "max_body_bytes": int, "log_prompts": bool}
_REPLICA_ARGS: dict[str, type] = {"replicas": int, "cpus_per_replica": float, "routing": str}


@serve.deployment(name="AstraiIngress", max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class OpenAIIngress:
    """The OpenAI HTTP surface as a Serve deployment, over a handle to the engine replicas."""

    def __init__(self, engine: DeploymentHandle, config: ServerConfig, num_replicas: int) -> None:
        self._engine = engine
        self._config = config
        self._num_replicas = num_replicas

    def __serve_build_asgi_app__(self) -> Any:
        return create_replica_app(self._config, lambda: ReplicaSetEngine.connect(self._engine,
                                                                                 num_replicas=self._num_replicas))


def build_app(args: dict[str, Any]) -> Application:
    """The application builder `serve run` and Serve config files import."""
    unknown = sorted(set(args) - {"model", "no_prefix_cache"} - set(_ENGINE_ARGS) - set(_SERVER_ARGS)
                     - set(_REPLICA_ARGS))
    if unknown:
        known = sorted({"model", "no_prefix_cache", *_ENGINE_ARGS, *_SERVER_ARGS, *_REPLICA_ARGS})
        raise ValueError(f"unknown argument {unknown[0]!r} for astrai's build_app; known: {', '.join(known)}")
    engine_kwargs = {k: _convert(k, args[k], t) for k, t in _ENGINE_ARGS.items() if k in args}
    if _convert("no_prefix_cache", args.get("no_prefix_cache", False), bool):
        engine_kwargs["enable_prefix_cache"] = False
    server = {k: _convert(k, args[k], t) for k, t in _SERVER_ARGS.items() if k in args}
    options = ReplicaOptions(**{k: _convert(k, args[k], t) for k, t in _REPLICA_ARGS.items() if k in args})
    # max_num_seqs is each replica's batch; admission counts the set's (replicas x batch) + max_queue.
    config = ServerConfig(model=str(args.get("model", DEFAULT_MODEL)), engine_kwargs=engine_kwargs, **server)
    # One CPU per replica unless told (the builder may run before the cluster has all its nodes).
    cpus = options.cpus_per_replica or 1.0
    nodes = sum(1 for n in ray.nodes() if n.get("Alive")) if ray.is_initialized() else 1
    engines = engine_application(config, options, cpus=cpus * options.replicas, nodes=max(1, nodes))
    return OpenAIIngress.bind(engines, config, options.replicas)


def _convert(name: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}") from None
