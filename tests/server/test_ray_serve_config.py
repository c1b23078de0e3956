"""The Serve config and RayService examples in docs/ are valid for Ray Serve, and build the
deployments they describe (no cluster needed: building an application starts nothing);
the front's retries of a call whose model replica died, over a stand-in handle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install 'crossrank[serve]'")

from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError
from ray.serve.schema import ServeDeploySchema

from crossrank.server.ray_serve import (
    ANSWERED,
    REPLICA_HEADER,
    RETRIES_HEADER,
    RemoteService,
    app_builder,
    parse_autoscale,
    rerank_app,
)
from crossrank.server.service import ApiError, ClientGone, Ranked, RerankCall

DOCS = Path(__file__).parents[2] / "docs"


def deployment_of(application):
    return application._bound_deployment  # Serve keeps the bound deployment here


def model_deployment_of(application):
    """The model deployment, bound as the front's first argument."""
    front = deployment_of(application)
    assert front.name == "RerankFront"
    assert front.ray_actor_options["num_cpus"] == 0  # the front holds no model
    return deployment_of(front.init_args[0])


def test_the_serve_config_example_is_valid_and_builds_its_deployment(monkeypatch):
    monkeypatch.setenv("CROSSRANK_API_KEY", "from-the-environment")
    config = yaml.safe_load((DOCS / "serve-config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.applications[0].import_path == "crossrank.server.ray_serve:app_builder"

    application = app_builder(config["applications"][0]["args"])
    front = deployment_of(application)
    assert front.init_args[1].max_queue == 256  # the front's own limits: the same settings
    # --max-queue bounds what a front holds and what waits for one at the proxy
    assert front.max_ongoing_requests == front.max_queued_requests == 256
    deployment = model_deployment_of(application)
    assert deployment.name == "RerankModel"
    assert deployment.ray_actor_options == {"num_cpus": 4, "num_gpus": 0}
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 4)
    models, settings, reranker_options, threads = deployment.init_args
    assert models == [("crossrank-default", None)]
    assert settings.api_key == "from-the-environment"  # never written in the file
    assert settings.max_documents == 1000 and settings.max_queue == 256
    assert reranker_options == {"max_batch_tokens": 8192}
    assert threads == 4


def test_the_rayservice_manifest_holds_a_valid_serve_config():
    manifest = yaml.safe_load((DOCS / "rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_config)
    assert schema.applications[0].import_path == "crossrank.server.ray_serve:app_builder"
    app_builder(serve_config["applications"][0]["args"])


def test_fixed_replicas_and_gpus():
    deployment = model_deployment_of(rerank_app([("a", "path")], replicas=3, gpus_per_replica=0.5))
    assert deployment._deployment_config.num_replicas == 3
    assert deployment.ray_actor_options == {"num_cpus": 1, "num_gpus": 0.5}
    assert deployment.init_args[3] is None  # on a GPU, torch's threads are left alone


@pytest.mark.parametrize("value", ["2", "3:1", "a:b", "-1:2", "0:0"])
def test_autoscale_bounds_are_checked(value):
    with pytest.raises(ValueError, match="MIN:MAX"):
        parse_autoscale(value)
    assert parse_autoscale("0:4") == (0, 4)


class StandInResponse:
    """What ``handle.rerank.remote`` returns: awaitable, cancellable."""

    def __init__(self, outcome, delay: float = 0.0):
        self.outcome, self.delay, self.cancelled = outcome, delay, False

    def __await__(self):
        return self.result().__await__()

    async def result(self):
        await asyncio.sleep(self.delay)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


class StandInHandle:
    """A model deployment's handle whose calls end as ``outcomes`` says, in turn."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent: list[StandInResponse] = []
        self.rerank = self  # handle.rerank.remote(...)

    def remote(self, model, call, request_id):
        outcome = self.outcomes.pop(0)
        self.sent.append(outcome if isinstance(outcome, StandInResponse) else None)
        return outcome if isinstance(outcome, StandInResponse) else StandInResponse(outcome)


RANKED = Ranked(order=[1, 0], scores=[0.2, 0.9], logits=[-1.4, 2.2], tokens=9, inputs=2)
CALL = RerankCall(query="q", documents=["a", "b"])


async def stays() -> None:
    await asyncio.Event().wait()


def rerank(handle, disconnected=stays) -> tuple[Ranked, dict]:
    async def run():
        answered: dict[str, str] = {}
        ANSWERED.set(answered)
        return await RemoteService("m", handle, 512, "chunk", False).rerank(
            CALL, disconnected
        ), answered

    return asyncio.run(run())


def test_a_call_whose_replica_died_is_sent_again():
    lost = ActorUnavailableError("unreachable", None)
    ranked, answered = rerank(StandInHandle(ActorDiedError(), lost, ("replica-b", RANKED)))
    assert ranked is RANKED
    assert answered == {REPLICA_HEADER: "replica-b", RETRIES_HEADER: "2"}


def test_a_503_with_retry_after_when_every_attempt_is_lost():
    with pytest.raises(ApiError) as refused:
        rerank(StandInHandle(ActorDiedError(), ActorDiedError(), ActorDiedError()))
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}


def test_a_full_model_queue_is_a_retryable_503_and_limits_pass_through():
    with pytest.raises(ApiError) as refused:
        rerank(StandInHandle(BackPressureError(10, 10, retry_after_s=2.5)))
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "2"}
    too_many = ApiError(413, "too_many_documents", "2 documents", limit=1)
    with pytest.raises(ApiError) as refused:  # the model replica's answer, not retried
        rerank(StandInHandle(("replica-a", too_many), ("replica-b", RANKED)))
    assert refused.value is too_many


def test_a_client_that_leaves_cancels_the_call():
    slow = StandInResponse(("replica-a", RANKED), delay=30)

    async def leaves() -> None:
        await asyncio.sleep(0.01)

    with pytest.raises(ClientGone):
        rerank(StandInHandle(slow), leaves)
    assert slow.cancelled
