"""The queue and inference thread, without HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from crossrank.engine.tokenization import PairFeatures
from crossrank.server.batcher import Batcher, ShuttingDown


def inputs(*lengths: int) -> list[PairFeatures]:
    # The first token id carries the length, so the fake model's logit identifies the input.
    return [PairFeatures([n] * n, [0] * n, i) for i, n in enumerate(lengths)]


class FakeModel:
    def __init__(self, fail: bool = False):
        self.calls: list[list[int]] = []
        self.fail = fail

    def __call__(self, features):
        self.calls.append([len(f) for f in features])
        if self.fail:
            raise RuntimeError("model broke")
        return np.array([float(f.input_ids[0]) for f in features])


def run(batcher: Batcher, *requests: list[PairFeatures]) -> list[np.ndarray]:
    async def submit_all():
        jobs = [batcher.submit(r) for r in requests]  # all queued before the worker starts
        batcher.start()
        return await asyncio.gather(*(job.future for job in jobs))

    try:
        return asyncio.run(submit_all())
    finally:
        batcher.stop()


def test_steps_pack_several_requests_in_arrival_order_under_the_budget():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=100)
    a, b, c = inputs(30, 20), inputs(40), inputs(25, 25, 25)
    results = run(batcher, a, b, c)
    assert [r.tolist() for r in results] == [[30.0, 20.0], [40.0], [25.0, 25.0, 25.0]]
    # 30+20+40 fit one step, the third request's first input would not; a request may span steps.
    assert model.calls == [[30, 20, 40], [25, 25, 25]]
    assert all(sum(call) <= 100 for call in model.calls)


def test_a_large_request_is_split_across_steps_and_an_input_over_budget_still_runs():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=50)
    (result,) = run(batcher, inputs(30, 30, 80, 10))
    assert result.tolist() == [30.0, 30.0, 80.0, 10.0]
    assert model.calls == [[30], [30], [80], [10]]


def test_a_model_error_fails_the_requests_in_that_step_only_the_server_goes_on():
    model = FakeModel(fail=True)
    batcher = Batcher(model, max_batch_tokens=100)

    async def scenario():
        job = batcher.submit(inputs(10))
        batcher.start()
        with pytest.raises(RuntimeError, match="model broke"):
            await job.future
        model.fail = False
        return await batcher.submit(inputs(7)).future

    try:
        assert asyncio.run(scenario()).tolist() == [7.0]
    finally:
        batcher.stop()


def test_cancelled_requests_are_not_scored_and_stop_drains_the_queue():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=1000)

    async def scenario():
        dropped = batcher.submit(inputs(11, 12))
        kept = batcher.submit(inputs(5))
        batcher.cancel(dropped)
        assert batcher.queued_requests == 1 and batcher.queued_pairs == 1
        batcher.start()
        result = await kept.future
        batcher.stop()  # returns once the queue is empty
        with pytest.raises(ShuttingDown):
            batcher.submit(inputs(3))
        return result

    assert asyncio.run(scenario()).tolist() == [5.0]
    assert model.calls == [[5]]


def test_an_empty_request_needs_no_model_call():
    model = FakeModel()
    (result,) = run(Batcher(model, max_batch_tokens=10), [])
    assert result.tolist() == [] and model.calls == []


def test_freed_memory_is_released_after_steps_and_a_failure_there_is_harmless():
    releases = []

    def release():
        releases.append(1)
        raise OSError("no malloc_trim here")

    batcher = Batcher(FakeModel(), max_batch_tokens=50, release_memory=release)
    results = run(batcher, inputs(30), inputs(30))
    assert [r.tolist() for r in results] == [[30.0], [30.0]]
    assert releases  # at least once, when the queue emptied; the error was only logged
