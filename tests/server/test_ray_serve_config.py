"""The Serve config and RayService examples in docs/ are valid for Ray Serve, and build the
deployment they describe (no cluster needed: building an application starts nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install 'crossrank[serve]'")

from ray.serve.schema import ServeDeploySchema

from crossrank.server.ray_serve import app_builder, parse_autoscale, rerank_app

DOCS = Path(__file__).parents[2] / "docs"


def deployment_of(application):
    return application._bound_deployment  # Serve keeps the bound deployment here


def test_the_serve_config_example_is_valid_and_builds_its_deployment(monkeypatch):
    monkeypatch.setenv("CROSSRANK_API_KEY", "from-the-environment")
    config = yaml.safe_load((DOCS / "serve-config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.applications[0].import_path == "crossrank.server.ray_serve:app_builder"

    deployment = deployment_of(app_builder(config["applications"][0]["args"]))
    assert deployment.name == "RerankServer"
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
    deployment = deployment_of(rerank_app([("a", "path")], replicas=3, gpus_per_replica=0.5))
    assert deployment._deployment_config.num_replicas == 3
    assert deployment.ray_actor_options == {"num_cpus": 1, "num_gpus": 0.5}
    assert deployment.init_args[3] is None  # on a GPU, torch's threads are left alone


@pytest.mark.parametrize("value", ["2", "3:1", "a:b", "-1:2", "0:0"])
def test_autoscale_bounds_are_checked(value):
    with pytest.raises(ValueError, match="MIN:MAX"):
        parse_autoscale(value)
    assert parse_autoscale("0:4") == (0, 4)
