"""A watchdog on model calls: a call that hangs makes the server unhealthy, then ends it.

A model call that never returns (a stuck kernel, a deadlock in a native library) cannot be
interrupted from Python: the inference thread is inside C code. What can be done is to say
so and get out of the way:

* past its deadline (a base plus a share per token of the batch, so that a big batch on a
  slow machine is not taken for a hung one) the model is marked unhealthy: ``/health``
  answers 503 with the reason, the requests waiting for it get a 503 with Retry-After, and
  new ones too;
* if the call returns after all, the model is healthy again (it was only slow);
* if it has still not returned ``exit_grace_s`` later, the process exits with status
  ``HUNG_EXIT_STATUS`` (``os._exit``: a clean shutdown would wait for the stuck thread
  forever), so that systemd (``Restart=on-failure``) or Kubernetes starts a fresh one.

The watcher is a thread rather than an asyncio task, so that it still fires if the event
loop itself is what got stuck. (Native code that hangs while holding the GIL stops every
Python thread; only a liveness probe with a timeout, from outside, catches that.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("crossrank.server")

HUNG_EXIT_STATUS = 70  # EX_SOFTWARE: an internal error; any non-zero status restarts it
T = TypeVar("T")


@dataclass(frozen=True)
class ModelCall:
    started: float  # time.monotonic()
    deadline: float
    tokens: int
    inputs: int


class Watchdog:
    """Watches one model's calls (``watch`` wraps its ``logits``)."""

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float,
        per_1k_tokens_s: float,
        exit_grace_s: float,
        exit: Callable[[int], object] = os._exit,
    ):
        self.name = name
        self.timeout_s = timeout_s
        self.per_1k_tokens_s = per_1k_tokens_s
        self.exit_grace_s = exit_grace_s
        self._exit = exit
        self._cond = threading.Condition()
        self._call: ModelCall | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tripped: asyncio.Event | None = None
        self.reason: str | None = None  # why the model is unhealthy; None while healthy

    def deadline_s(self, tokens: int) -> float:
        return self.timeout_s + self.per_1k_tokens_s * tokens / 1000

    def retry_after_s(self) -> int:
        """Seconds a refused client should wait: the process is restarted by then, or
        the call has come back."""
        return max(1, math.ceil(self.exit_grace_s))

    # ------------------------------------------------------------ the event loop's side

    def start(self) -> None:
        """Start watching; called on the event loop, whose requests it fails."""
        self._loop = asyncio.get_running_loop()
        self._tripped = asyncio.Event()
        with self._cond:
            self._stopping = False
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"crossrank-watchdog-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    async def tripped(self) -> str:
        """Returns (the reason) once the model is found hung; at once if it already is."""
        if self._tripped is None:  # not started: nothing watches, nothing trips
            await asyncio.Event().wait()
        assert self._tripped is not None
        await self._tripped.wait()
        return self.reason or "the model was unhealthy"

    # ------------------------------------------------------------ the inference thread's side

    def watch(self, logits: Callable[[Sequence[T]], object]) -> Callable[[Sequence[T]], object]:
        """``logits`` with each call timed against its deadline."""

        def watched(features: Sequence[T]) -> object:
            tokens = sum(len(f) for f in features)  # type: ignore[arg-type]
            now = time.monotonic()
            call = ModelCall(now, now + self.deadline_s(tokens), tokens, len(features))
            with self._cond:
                self._call = call
                self._cond.notify_all()
            try:
                return logits(features)
            finally:
                with self._cond:
                    self._call = None
                    self._cond.notify_all()
                if self.reason is not None:
                    seconds = time.monotonic() - call.started
                    log.warning("model %s: the late call returned after %.1f s", self.name, seconds)
                    self._set_reason(None)

        return watched

    # ------------------------------------------------------------ the watcher thread

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                call = self._call
                now = time.monotonic()
                if call is None:
                    self._cond.wait()
                elif now < call.deadline:
                    self._cond.wait(call.deadline - now)
                elif now < call.deadline + self.exit_grace_s:
                    if self.reason is None:
                        self._trip(call, now)
                    self._cond.wait(call.deadline + self.exit_grace_s - now)
                else:
                    self._give_up(call, now)
                    return

    def _trip(self, call: ModelCall, now: float) -> None:
        reason = (
            f"model {self.name}: a model call ({call.inputs} inputs, {call.tokens} tokens) "
            f"has run {now - call.started:.1f} s, past its deadline of "
            f"{call.deadline - call.started:.1f} s"
        )
        log.error("%s; answering 503 until it returns", reason)
        self._set_reason(reason)

    def _set_reason(self, reason: str | None) -> None:
        self.reason = reason
        loop, tripped = self._loop, self._tripped
        if loop is None or tripped is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(tripped.set if reason else tripped.clear)

    def _give_up(self, call: ModelCall, now: float) -> None:
        log.critical(
            "model %s: the model call has not returned after %.1f s; exiting with status %d "
            "so that the supervisor restarts the server",
            self.name,
            now - call.started,
            HUNG_EXIT_STATUS,
        )
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stderr.flush()
        self._exit(HUNG_EXIT_STATUS)
