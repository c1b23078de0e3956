"""The rerank server on Ray Serve: the same app over model replicas that Ray Serve routes
to, autoscales, health-checks and replaces, with requests that outlive a dead replica.

Two deployments, composed as Serve's model composition intends:

* ``RerankFront``, the ingress, runs ``build_app``'s FastAPI app (every dialect, the API
  key, the limits, /metrics, the playground) and loads no model. Its ``Service`` for each
  model is a ``RemoteService``: the route's ``RerankCall`` goes through a
  ``DeploymentHandle`` to a model replica, and comes back as a ``Ranked`` (or the
  ``ApiError`` the model's limits raised).
* ``RerankModel`` holds the models, loaded once per replica, each behind its own
  ``Service`` (limits, tokenization, the cross-request batcher, the watchdog).

Serve's HTTP proxy answers 500 for a request whose replica died while holding it: it
retries no request once a replica has accepted it. The front does: reranking changes
nothing, so a call lost with its replica (``ActorDiedError``, ``ActorUnavailableError``)
is sent again, to another replica, up to ``MODEL_ATTEMPTS`` times; past that, or when the
model deployment is over its queue, the client gets a 503 with Retry-After.

What the front adds to the app's responses and routes:

* ``x-crossrank-replica``: the model replica that scored the request (rerank routes),
  ``x-crossrank-front``: the front replica, ``x-crossrank-retries``: calls sent again;
* ``GET /health/replicas``: each deployment's replicas and their states, from Serve;
* ``GET /metrics/model``: one model replica's metrics (queue, batches), named in the
  header; /metrics is the front replica's own (HTTP requests by route and status).

Serve calls each model replica's ``check_health``: it fails while a model call hangs (the
watchdog's verdict), and Serve replaces the replica.

``crossrank serve --ray`` runs it (``serve_on_ray``); ``rerank_app`` builds it for
``serve.run`` or to compose with your own Serve applications, and ``app_builder`` is the
``import_path`` target of a Serve config file (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import AutoscalingConfig, BackpressureConfig
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from crossrank.server.metrics import CONTENT_TYPE, ServerMetrics
from crossrank.server.models import ServedModels
from crossrank.server.service import (
    DEFAULT_MODEL_NAME,
    REQUEST_ID,
    RETRY_AFTER_SECONDS,
    ApiError,
    ClientGone,
    Ranked,
    RerankCall,
    ServerSettings,
)

log = logging.getLogger("crossrank.server.ray")

REPLICA_HEADER = "x-crossrank-replica"
FRONT_HEADER = "x-crossrank-front"
RETRIES_HEADER = "x-crossrank-retries"
APP_NAME = "crossrank"
FRONT_DEPLOYMENT = "RerankFront"
MODEL_DEPLOYMENT = "RerankModel"
API_KEY_ENV = "CROSSRANK_API_KEY"
# A call whose replica died goes to another: enough for two replicas lost at once.
MODEL_ATTEMPTS = 3
# Exceptions that mean the replica, not the request, failed: the request may be sent again.
REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
# Requests a model replica holds at once before Serve routes elsewhere or queues them in
# the front's handle. Batching across requests needs several in each replica; the
# Service's own --max-queue and token admission still bound the work admitted.
MAX_ONGOING_REQUESTS = 64
# Ongoing requests per model replica that the autoscaler aims at: a replica batches a
# few requests per model call, so it is not "busy" at 2 as Serve's default assumes.
TARGET_ONGOING_REQUESTS = 8
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60.0

ModelSpecs = Sequence[tuple[str, str | None]]
# What a front needs to know of each model without loading it: (max_length, long_documents).
ModelShapes = dict[str, tuple[int, str, bool]]  # max_length, long_documents, reads_instruction

# Per HTTP request: who answered it, filled in by the RemoteService for ReplicaHeaders.
ANSWERED: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("answered")


# ---------------------------------------------------------------- the model deployment


def load_rerankers(models: ModelSpecs, options: Mapping[str, Any]) -> dict[str, Any]:
    from crossrank import Reranker

    return {name: Reranker.from_pretrained(where, **options) for name, where in models}


async def never() -> None:
    """The model replica never sees the client: the front cancels the call if it leaves."""
    await asyncio.Event().wait()


class RerankModel:
    """One model replica: the models, loaded once, each behind its ``Service`` as in
    ``crossrank serve`` (limits, tokenization, the cross-request batcher, the watchdog)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        models: ModelSpecs,
        settings: ServerSettings,
        reranker_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ):
        import torch

        if threads:  # the replica's CPUs, not every core of the node
            torch.set_num_threads(threads)
        self.replica = serve.get_replica_context().replica_id.unique_id
        rerankers = await asyncio.to_thread(load_rerankers, models, reranker_options or {})
        self.metrics = ServerMetrics()
        self.served = ServedModels(rerankers, settings, self.metrics)
        self.served.start()  # on this event loop, where the requests run
        log.info("model replica %s (pid %d) loaded %s", self.replica, os.getpid(), list(rerankers))

    def shapes(self) -> ModelShapes:
        services = self.served.services.items()
        return {name: (s.max_length, s.long_documents, s.reads_instruction) for name, s in services}

    async def rerank(
        self, model: str, call: RerankCall, request_id: str = "-"
    ) -> tuple[str, Ranked | ApiError]:
        """The call scored by the named model; a limit it breaks is an answer too, returned
        (not raised) so that Serve counts no replica error for a client's mistake."""
        REQUEST_ID.set(request_id)  # this call's own task: its log lines name the request
        try:
            return self.replica, await self.served.get(model).rerank(call, never)
        except ApiError as error:
            return self.replica, error

    def render_metrics(self) -> tuple[str, bytes]:
        return self.replica, self.metrics.render()

    def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``: raising marks the replica
        unhealthy, and Serve stops routing to it and starts another."""
        for service in self.served.services.values():
            if service.watchdog is not None and service.watchdog.reason is not None:
                raise RuntimeError(f"model {service.name}: {service.watchdog.reason}")

    async def __del__(self) -> None:
        # Serve calls this once the replica's requests are done (graceful shutdown), and
        # after a constructor that failed (a model that would not load): nothing to stop.
        served = getattr(self, "served", None)
        if served is not None:
            await asyncio.to_thread(served.stop)


# ---------------------------------------------------------------- the front deployment


async def answer_or_leave(
    response: DeploymentResponse, disconnected: Callable[[], Awaitable[None]]
) -> Any:
    """The model replica's answer, unless the client leaves first: then the call is
    cancelled (Serve cancels it in the replica, which drops its queued inputs)."""

    async def answer() -> Any:
        return await response

    answered = asyncio.ensure_future(answer())
    left = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({answered, left}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        response.cancel()
        answered.cancel()
        raise
    finally:
        left.cancel()
    if answered not in done:
        response.cancel()
        answered.cancel()
        raise ClientGone()
    return answered.result()


def unavailable(message: str, retry_after_s: float | None = RETRY_AFTER_SECONDS) -> ApiError:
    headers = None if retry_after_s is None else {"Retry-After": str(max(1, round(retry_after_s)))}
    return ApiError(503, "replicas_unavailable", message + "; retry later", headers=headers)


class RemoteService:
    """A model the model deployment serves: what the routes use of a ``Service``, its
    scoring done by a model replica through Serve's handle."""

    watchdog = None  # each model replica's own reports to Serve's health checks

    def __init__(
        self,
        name: str,
        handle: DeploymentHandle,
        max_length: int,
        long_documents: str,
        reads_instruction: bool,
    ):
        self.name = name
        self.handle = handle
        self.max_length = max_length
        self.long_documents = long_documents
        self.reads_instruction = reads_instruction

    async def rerank(self, call: RerankCall, disconnected: Callable[[], Awaitable[None]]) -> Ranked:
        answered = ANSWERED.get({})
        for attempt in range(MODEL_ATTEMPTS):
            try:
                response = self.handle.rerank.remote(self.name, call, REQUEST_ID.get())
                replica, result = await answer_or_leave(response, disconnected)
            except REPLICA_LOST as error:
                # Safe to send again: reranking changes nothing. Serve's router has
                # marked the replica dead, so the next attempt goes to another.
                again = attempt + 1 < MODEL_ATTEMPTS
                if again:
                    answered[RETRIES_HEADER] = str(attempt + 1)
                log.warning(
                    "request %s: its model replica was lost (%s)%s",
                    REQUEST_ID.get(),
                    type(error).__name__,
                    "; sending it to another" if again else "",
                )
                continue
            except BackPressureError as error:
                raise unavailable(error.message, error.retry_after_s) from None
            except DeploymentUnavailableError as error:
                raise unavailable(error.message) from None
            answered[REPLICA_HEADER] = replica
            if isinstance(result, ApiError):
                raise result
            return result
        raise unavailable(f"{MODEL_ATTEMPTS} model replicas were lost with this request")


class RemoteModels(ServedModels):
    """``ServedModels`` whose services are ``RemoteService``s: nothing loads or runs here."""

    def __init__(
        self, handle: DeploymentHandle, shapes: ModelShapes, settings: ServerSettings
    ):  # no super(): no models
        services = {name: RemoteService(name, handle, *shape) for name, shape in shapes.items()}
        self.set_services(services, settings)  # type: ignore[arg-type]

    def start(self) -> None:
        pass  # the model replicas start their own batchers

    def stop(self) -> None:
        pass  # and drain them when Serve stops them


class ReplicaHeaders:
    """ASGI middleware: name the front replica on every response, and the model replica
    (and any retries) on those a model answered, so a client (or a test) can see who
    answered. Pure ASGI, so it leaves streaming and errors alone."""

    def __init__(self, app: Any, front: str):
        self.app = app
        self.front = front

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        answered = {FRONT_HEADER: self.front}
        token = ANSWERED.set(answered)

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                named = [(k.encode(), v.encode()) for k, v in answered.items()]
                message = {**message, "headers": [*message.get("headers", []), *named]}
            await send(message)

        try:
            await self.app(scope, receive, send_named)
        finally:
            ANSWERED.reset(token)


@serve.ingress()  # the app is built per replica, in __serve_build_asgi_app__
class RerankFront:
    """The HTTP side of the server: routes, dialects, API key, limits on the body and
    metrics, over the model deployment. It loads no model."""

    async def __init__(self, model: DeploymentHandle, settings: ServerSettings):  # type: ignore[misc]
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.app_name = context.app_name
        self.model = model
        self.settings = settings
        # Waits for a model replica to be up: the front cannot answer before anyway.
        self.served = RemoteModels(model, await model.shapes.remote(), settings)

    def __serve_build_asgi_app__(self) -> Any:
        from crossrank.server.app import build_app

        app = build_app(self.served, self.settings, ServerMetrics())
        add_replica_routes(app, self.app_name, self.model)
        app.add_middleware(ReplicaHeaders, front=self.replica)  # outermost
        return app


def add_replica_routes(app: FastAPI, app_name: str, model: DeploymentHandle) -> None:
    @app.get("/health/replicas", tags=["service"])
    async def replicas() -> dict[str, Any]:
        """The model replicas and their states (RUNNING is ready), as Ray Serve's
        controller sees them, and under ``deployments`` those of each deployment."""
        status = await asyncio.to_thread(serve.status)
        application = status.applications.get(app_name)
        deployments = {
            name: {
                "status": str(deployment.status.value),
                "replica_states": {
                    str(getattr(state, "value", state)): count
                    for state, count in deployment.replica_states.items()
                },
            }
            for name, deployment in (application.deployments if application else {}).items()
        }
        unknown = {"status": "unknown", "replica_states": {}}
        return {**deployments.get(MODEL_DEPLOYMENT, unknown), "deployments": deployments}

    @app.get("/metrics/model", tags=["service"], response_class=Response)
    async def model_metrics() -> Response:
        """One model replica's metrics (queue, batches, tokens), named in the header."""
        replica, text = await model.render_metrics.remote()
        return Response(text, media_type=CONTENT_TYPE, headers={REPLICA_HEADER: replica})


# ---------------------------------------------------------------- building and running


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


def model_scaling(
    replicas: int, autoscale: tuple[int, int] | None, target_ongoing_requests: float
) -> dict[str, Any]:
    if autoscale is None:
        return {"num_replicas": replicas}
    config = AutoscalingConfig(
        min_replicas=autoscale[0],
        initial_replicas=max(1, autoscale[0]),
        max_replicas=autoscale[1],
        target_ongoing_requests=target_ongoing_requests,
    )
    return {"autoscaling_config": config}


def rerank_app(
    models: ModelSpecs | None = None,
    settings: ServerSettings | None = None,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    target_ongoing_requests: float = TARGET_ONGOING_REQUESTS,
    cpus_per_replica: float = 1,
    gpus_per_replica: float = 0,
    front_replicas: int = 1,
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS,
    graceful_shutdown_timeout_s: float = GRACEFUL_SHUTDOWN_TIMEOUT_S,
    **reranker_options: Any,
) -> serve.Application:
    """The rerank server as a bound Serve application, for ``serve.run`` or as part of
    your own: ``models`` as ``[(name, path or hub id)]`` (none: the bundled model),
    ``reranker_options`` for ``Reranker.from_pretrained`` (``max_length``, ``dtype``,
    ``device``, ``max_batch_tokens``...). ``replicas`` (or ``autoscale=(min, max)``, on
    ongoing requests per replica) and the CPUs and GPUs are the model deployment's;
    ``front_replicas`` front replicas, which hold no model, take the HTTP requests."""
    models = list(models or [(DEFAULT_MODEL_NAME, None)])
    settings = settings or ServerSettings(model_name=models[0][0])
    drain = {  # a replica being stopped takes no new requests and finishes its own
        "graceful_shutdown_wait_loop_s": 1.0,
        "graceful_shutdown_timeout_s": graceful_shutdown_timeout_s,
    }
    model = serve.deployment(RerankModel).options(
        name=MODEL_DEPLOYMENT,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        max_ongoing_requests=max_ongoing_requests,
        health_check_period_s=5.0,
        health_check_timeout_s=30.0,
        **drain,
        **model_scaling(replicas, autoscale, target_ongoing_requests),
    )
    front = serve.deployment(RerankFront).options(
        name=FRONT_DEPLOYMENT,
        num_replicas=front_replicas,
        # It only parses and waits: no CPU reserved, as for Serve's own proxy.
        ray_actor_options={"num_cpus": 0},
        # --max-queue bounds the requests a front holds (parsed bodies, waiting on model
        # replicas), as it bounds those one process admits, and those waiting at the
        # proxy for a front with room; beyond, a retryable 503.
        max_ongoing_requests=settings.max_queue,
        max_queued_requests=settings.max_queue,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_SECONDS),
        **drain,
    )
    threads = max(1, int(cpus_per_replica)) if not gpus_per_replica else None
    return front.bind(model.bind(models, settings, dict(reranker_options), threads), settings)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The ``import_path`` of a Serve config file (``crossrank.server.ray_serve:app_builder``):
    ``args`` holds ``models`` (``{name: path}``, in order), ``replicas`` or ``autoscale``
    (``"MIN:MAX"``), ``cpus_per_replica``, ``gpus_per_replica``, ``front_replicas``, any
    ``ServerSettings`` field (``max_documents``...) and ``Reranker`` options
    (``max_length``, ``dtype``...). The API key comes from ``CROSSRANK_API_KEY`` in the
    application's environment."""
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
        try:
            serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as error:  # a replica's constructor failed, again and again
            raise SystemExit(
                f"crossrank serve --ray: {error} (each replica's error is in the log above)"
            ) from None
        log.info("serving on Ray Serve at http://%s:%d", host, port)
        stop.wait()
        log.info("stopping: replicas finish their requests (graceful shutdown)")
        # Deleting the application drains its replicas; the proxy stays for others' apps.
        serve.delete(APP_NAME)
        if ray_address is None:
            serve.shutdown()
    finally:
        ray.shutdown()
