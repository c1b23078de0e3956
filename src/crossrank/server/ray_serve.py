"""The rerank server as a Ray Serve deployment: the same app over replicas that Ray Serve
routes to, autoscales, health-checks and replaces.

Each replica is one ``RerankServer`` actor: it loads the models once, builds the same
FastAPI app as ``crossrank serve`` (``create_app``: every dialect, the API key, the
limits, /metrics, the playground) and keeps that app's own batcher per model. Ray
Serve's HTTP proxy hands requests to the app through Serve's FastAPI ingress, so nothing
here parses HTTP. What this module adds to the app:

* an ``x-crossrank-replica`` header on every response, naming the replica that answered;
* ``GET /health/replicas``: the deployment's replicas and their states, from Serve;
* ``check_health``, which Serve calls on each replica: it fails while a model call hangs
  (the watchdog's verdict, the same as /health's 503), and Serve replaces the replica.

``crossrank serve --ray`` runs it (``serve_on_ray``); ``rerank_app`` builds it for
``serve.run`` or to compose with your own Serve applications, and ``app_builder`` is the
``import_path`` target of a Serve config file (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.config import AutoscalingConfig

from crossrank.server.service import DEFAULT_MODEL_NAME, ServerSettings

log = logging.getLogger("crossrank.server.ray")

REPLICA_HEADER = "x-crossrank-replica"
APP_NAME = "crossrank"
DEPLOYMENT_NAME = "RerankServer"
API_KEY_ENV = "CROSSRANK_API_KEY"
# Requests a replica holds at once before Serve routes elsewhere or queues at the proxy.
# Batching across requests needs several in each replica; the app's own --max-queue and
# token admission still bound the work admitted.
MAX_ONGOING_REQUESTS = 64
# Ongoing requests per replica that the autoscaler aims at: a replica batches a few
# requests per model call, so it is not "busy" at 2 as Serve's default assumes.
TARGET_ONGOING_REQUESTS = 8
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60.0

ModelSpecs = Sequence[tuple[str, str | None]]


class ReplicaHeader:
    """ASGI middleware: name the replica on every response, so a client (or a test) can
    see which replica answered. Pure ASGI, so it leaves streaming and errors alone."""

    def __init__(self, app: Any, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


def load_rerankers(models: ModelSpecs, options: Mapping[str, Any]) -> dict[str, Any]:
    from crossrank import Reranker

    return {name: Reranker.from_pretrained(where, **options) for name, where in models}


@serve.ingress()  # the app is built per replica, in __serve_build_asgi_app__
class RerankServer:
    """One replica: the models, loaded once, behind ``create_app``'s FastAPI app."""

    def __init__(
        self,
        models: ModelSpecs,
        settings: ServerSettings,
        reranker_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ):
        import torch

        if threads:  # the replica's CPUs, not every core of the node
            torch.set_num_threads(threads)
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.deployment = context.deployment
        self.app_name = context.app_name
        self.settings = settings
        self.rerankers = load_rerankers(models, reranker_options or {})
        self.fastapi_app: FastAPI | None = None
        log.info("replica %s (pid %d) loaded %s", self.replica, os.getpid(), list(self.rerankers))

    def __serve_build_asgi_app__(self) -> Any:
        from crossrank.server.app import create_app

        app = create_app(self.rerankers, self.settings)
        add_replica_routes(app, self.app_name, self.deployment)
        app.add_middleware(ReplicaHeader, replica=self.replica)  # outermost
        self.fastapi_app = app
        return app

    def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``: raising marks the replica
        unhealthy, and Serve stops routing to it and starts another."""
        if self.fastapi_app is None:
            return
        for service in self.fastapi_app.state.served.services.values():
            watchdog = getattr(service, "watchdog", None)
            if watchdog is not None and watchdog.reason is not None:
                raise RuntimeError(f"model {service.name}: {watchdog.reason}")


def add_replica_routes(app: FastAPI, app_name: str, deployment: str) -> None:
    @app.get("/health/replicas", tags=["service"])
    async def replicas() -> dict[str, Any]:
        """The replicas of this deployment and their states (RUNNING is ready), as Ray
        Serve's controller sees them; the answering replica is in the response header."""
        status = await asyncio.to_thread(serve.status)
        application = status.applications.get(app_name)
        if application is None:
            return {"status": "unknown", "replica_states": {}}
        deployment_status = application.deployments[deployment]
        return {
            "status": str(deployment_status.status.value),
            "replica_states": {
                str(getattr(state, "value", state)): count
                for state, count in deployment_status.replica_states.items()
            },
        }


def parse_autoscale(value: str) -> tuple[int, int]:
    """``MIN:MAX`` replicas, as --autoscale takes them."""
    low, colon, high = value.partition(":")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = (-1, -1)
    if not colon or bounds[0] < 0 or bounds[1] < max(1, bounds[0]):
        raise ValueError(f"expected MIN:MAX replicas with 0 <= MIN <= MAX, MAX >= 1, not {value!r}")
    return bounds


def rerank_app(
    models: ModelSpecs | None = None,
    settings: ServerSettings | None = None,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    target_ongoing_requests: float = TARGET_ONGOING_REQUESTS,
    cpus_per_replica: float = 1,
    gpus_per_replica: float = 0,
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS,
    graceful_shutdown_timeout_s: float = GRACEFUL_SHUTDOWN_TIMEOUT_S,
    **reranker_options: Any,
) -> serve.Application:
    """The rerank server as a bound Serve application, for ``serve.run`` or as part of
    your own: ``models`` as ``[(name, path or hub id)]`` (none: the bundled model),
    ``reranker_options`` for ``Reranker.from_pretrained`` (``max_length``, ``dtype``,
    ``device``, ``max_batch_tokens``...). ``autoscale=(min, max)`` scales on ongoing
    requests per replica instead of a fixed ``replicas``."""
    models = list(models or [(DEFAULT_MODEL_NAME, None)])
    settings = settings or ServerSettings(model_name=models[0][0])
    if autoscale is not None:
        scaling: dict[str, Any] = {
            "autoscaling_config": AutoscalingConfig(
                min_replicas=autoscale[0],
                initial_replicas=max(1, autoscale[0]),
                max_replicas=autoscale[1],
                target_ongoing_requests=target_ongoing_requests,
            )
        }
    else:
        scaling = {"num_replicas": replicas}
    deployment = serve.deployment(RerankServer).options(
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        max_ongoing_requests=max_ongoing_requests,
        # Requests waiting at the proxy for a replica with room; beyond, Serve answers 503.
        max_queued_requests=settings.max_queue,
        # Drain: a replica being stopped takes no new requests and finishes its own.
        graceful_shutdown_wait_loop_s=1.0,
        graceful_shutdown_timeout_s=graceful_shutdown_timeout_s,
        health_check_period_s=5.0,
        health_check_timeout_s=30.0,
        **scaling,
    )
    threads = max(1, int(cpus_per_replica)) if not gpus_per_replica else None
    return deployment.bind(models, settings, dict(reranker_options), threads)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The ``import_path`` of a Serve config file (``crossrank.server.ray_serve:app_builder``):
    ``args`` holds ``models`` (``{name: path}``, in order), ``replicas`` or ``autoscale``
    (``"MIN:MAX"``), ``cpus_per_replica``, ``gpus_per_replica``, any ``ServerSettings``
    field (``max_documents``...) and ``Reranker`` options (``max_length``, ``dtype``...).
    The API key comes from ``CROSSRANK_API_KEY`` in the application's environment."""
    args = dict(args)
    models = list((args.pop("models", None) or {DEFAULT_MODEL_NAME: None}).items())
    fields = set(ServerSettings.__dataclass_fields__)
    settings_args = {key: args.pop(key) for key in list(args) if key in fields}
    settings_args.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
    settings = ServerSettings(model_name=models[0][0], **settings_args)
    autoscale = args.pop("autoscale", None)
    return rerank_app(
        models,
        settings,
        autoscale=parse_autoscale(autoscale) if autoscale else None,
        **args,
    )


def serve_on_ray(
    application: serve.Application,
    host: str,
    port: int,
    ray_address: str | None,
    cpus_needed: float = 0,
) -> None:
    """Run the application on Ray Serve until SIGTERM or Ctrl-C, then drain and stop."""
    import ray

    if ray_address is None:
        ray.init()  # a local Ray instance with this machine's CPUs (and GPUs)
    else:
        ray.init(address=ray_address)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus_needed > cpus:
        ray.shutdown()
        # Serve would wait forever for replicas that no node can place.
        raise SystemExit(
            f"crossrank serve: the replicas need {cpus_needed:g} CPUs and the Ray cluster "
            f"has {cpus:g}: fewer --replicas, a smaller (fractional) --cpus-per-replica, "
            "or a larger cluster"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        log.info("serving on Ray Serve at http://%s:%d", host, port)
        stop.wait()
        log.info("stopping: replicas finish their requests (graceful shutdown)")
        # Deleting the application drains its replicas; the proxy stays for others' apps.
        serve.delete(APP_NAME)
        if ray_address is None:
            serve.shutdown()
    finally:
        ray.shutdown()
