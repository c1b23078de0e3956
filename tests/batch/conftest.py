"""A local Ray instance of 2 CPUs for the batch tests, started once and shut down after."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
