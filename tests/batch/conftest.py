"""A local Ray instance of 2 CPUs for the batch tests, started once and shut down after."""

from __future__ import annotations

import pytest
import ray
import torch


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Replicas run one torch thread each (PairScorer's default); the reference scores of
    these tests must too, since fp32 sums are bit-identical only for the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
