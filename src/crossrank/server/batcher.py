"""Dynamic batching across requests: one queue, one inference thread.

Requests arrive already tokenized (the router tokenizes in a thread pool). Their model
inputs wait here in arrival order; a single worker thread takes inputs from as many
requests as fit one token budget, scores them in one ``Reranker.logits`` call and hands
each request its logits through its asyncio future. One thread, because the model
already uses every core for one batch and two concurrent forward passes only fight over
them; batching, not concurrency, is what raises throughput.

A large request may be split across several steps, so a small request queued behind it
waits for at most one step per budget's worth of work ahead of it, never for a whole
1000-document request to finish in one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crossrank.engine.tokenization import PairFeatures

log = logging.getLogger(__name__)


def glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library is not glibc."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


# Each model call allocates and frees activations of a different shape. glibc keeps the
# freed memory in its heap rather than returning it, so resident memory climbs with every
# new shape (measured: +200 MB over 8 calls of 8192 tokens, on a 350 MB process) though
# nothing leaks. Trimming after a call gives it back; at most once a second, or when the
# queue empties, so that fast (GPU) steps do not pay for it each time.
TRIM_INTERVAL_S = 1.0


class ShuttingDown(RuntimeError):
    """The batcher is stopping and takes no new work."""


@dataclass(frozen=True, slots=True)
class BatchStats:
    pairs: int  # model inputs in the step
    tokens: int  # their tokens, without padding
    requests: int  # distinct requests they came from
    seconds: float


class Job:
    """One request's model inputs and, as they are scored, their logits."""

    def __init__(self, features: Sequence[PairFeatures], loop: asyncio.AbstractEventLoop):
        self.features = list(features)
        self.logits = np.empty(len(self.features), dtype=np.float64)
        self.loop = loop
        self.future: asyncio.Future[np.ndarray] = loop.create_future()
        self.next = 0  # first input not yet handed to the worker
        self.unscored = len(self.features)
        self.cancelled = False
        self.tokens = sum(len(f) for f in self.features)

    def resolve(self, result: np.ndarray | BaseException) -> None:
        """Complete the future from any thread (the worker never touches it directly)."""

        def complete() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        # A closed event loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(complete)


class Batcher:
    def __init__(
        self,
        logits: Callable[[Sequence[PairFeatures]], np.ndarray],
        *,
        max_batch_tokens: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        release_memory: Callable[[], object] | None = None,
    ):
        """``logits`` scores model inputs in input order (``Reranker.logits``);
        ``release_memory`` (``glibc_malloc_trim()``) returns freed heap memory to the OS."""
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, not {max_batch_tokens}")
        self._logits = logits
        self.max_batch_tokens = max_batch_tokens
        self._on_batch = on_batch
        self._release_memory = release_memory
        self._released = time.monotonic()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.queued_pairs = 0  # inputs waiting, read by the metrics
        self.queued_requests = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="crossrank-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish everything already queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, features: Sequence[PairFeatures]) -> Job:
        """Queue a request's inputs; ``await job.future`` gives their logits in order."""
        job = Job(features, asyncio.get_running_loop())
        if not job.features:
            job.future.set_result(job.logits)
            return job
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._queue.append(job)
            self.queued_pairs += len(job.features)
            self.queued_requests += 1
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a request whose client went away: its inputs left in the queue are not scored."""
        with self._cond:
            if job.cancelled:
                return
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                self.queued_pairs -= len(job.features) - job.next
                self.queued_requests -= 1
        job.future.cancel()

    def _take(self) -> list[tuple[Job, int, int]]:
        """Inputs for the next step, in arrival order, up to the token budget (at least one)."""
        step: list[tuple[Job, int, int]] = []
        tokens = 0
        while self._queue:
            job = self._queue[0]
            start = end = job.next
            while end < len(job.features):
                length = len(job.features[end])
                # Always at least one input, however long, so the queue moves.
                if (step or end > start) and tokens + length > self.max_batch_tokens:
                    break
                tokens += length
                end += 1
            if end > start:
                step.append((job, start, end))
                job.next = end
                self.queued_pairs -= end - start
            if job.next < len(job.features):
                break  # the budget is spent
            self._queue.popleft()
            self.queued_requests -= 1
        return step

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, and the queue is drained
                step = self._take()
            try:
                self._score(step)
            except Exception:  # the thread must outlive any one step, or every request hangs
                log.exception("inference step failed")
                self._fail(step, RuntimeError("inference step failed"))
            self._trim()

    def _trim(self) -> None:
        now = time.monotonic()
        if self._release_memory is None:
            return
        if now - self._released < TRIM_INTERVAL_S and self._queue:
            return
        self._released = now
        try:
            self._release_memory()
        except Exception:  # only memory housekeeping: never worth failing a request for
            log.exception("releasing freed memory failed")

    def _score(self, step: list[tuple[Job, int, int]]) -> None:
        features = [f for job, start, end in step for f in job.features[start:end]]
        began = time.perf_counter()
        try:
            logits = self._logits(features)
            if len(logits) != len(features):
                raise RuntimeError(f"{len(logits)} logits for {len(features)} inputs")
        except Exception as error:  # a model failure fails its requests, not the server
            log.exception("inference failed for a batch of %d inputs", len(features))
            self._fail(step, error)
            return
        seconds = time.perf_counter() - began
        offset = 0
        for job, start, end in step:
            job.logits[start:end] = logits[offset : offset + end - start]
            offset += end - start
            job.unscored -= end - start
            if job.unscored == 0 and not job.cancelled:
                job.resolve(job.logits)
        if self._on_batch is not None:
            self._on_batch(  # after the results are out, so a failure here costs only stats
                BatchStats(
                    pairs=len(features),
                    tokens=sum(len(f) for f in features),
                    requests=len(step),
                    seconds=seconds,
                )
            )

    def _fail(self, step: list[tuple[Job, int, int]], error: BaseException) -> None:
        """Fail every request in the step, including the inputs it still has queued."""
        for job, _, _ in step:
            with self._cond:
                if job in self._queue:
                    self._queue.remove(job)
                    self.queued_pairs -= len(job.features) - job.next
                    self.queued_requests -= 1
                job.cancelled = True
            job.resolve(error)
