"""A background thread that runs batches of jobs through one function, behind a bounded inbox.

The classifier embeds its crops here, off the thread that tracks. ``submit`` never blocks: it refuses
a job when ``capacity`` jobs are already in flight. ``collect`` returns the finished results without
waiting; ``wait`` blocks until every submitted job is done (tests, orderly ends). A failure of the
function stops the worker; the producer's next ``submit``/``collect``/``wait`` raises it as one
``WorkerError`` naming the worker and the original error. ``close`` stops and joins the thread.

One producer thread only (the pipeline's update thread): the in-flight count is its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

_STOP = object()


class WorkerError(RuntimeError):
    """The background worker's function raised; the worker has stopped."""


class BatchWorker(Generic[J, R]):
    """Runs ``fn(jobs) -> results`` (one result per job, any order) on its own thread, at most
    ``batch`` jobs per call, at most ``capacity`` jobs submitted and not yet collected.

    ``nice``: on Linux, the thread's niceness is raised by this much (a lower CPU priority than the
    frame loop, so on a saturated box the worker yields rather than the segmenter); 0 leaves it.
    """

    def __init__(self, fn: Callable[[list[J]], list[R]], *, capacity: int, batch: int, name: str, nice: int = 0):
        if capacity < 1 or batch < 1:
            raise ValueError(f"BatchWorker: capacity and batch must be >= 1, found {capacity} and {batch}")
        self._fn = fn
        self.capacity = capacity
        self.batch = batch
        self.name = name
        self.nice = nice
        self._inbox: queue.Queue = queue.Queue(maxsize=capacity + 1)  # + the stop marker
        self._done: list[R] = []
        self._cond = threading.Condition()
        self._in_flight = 0  # submitted and not collected (producer thread only)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False

    # -- producer side ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def room(self) -> int:
        """Jobs ``submit`` would accept now."""
        return self.capacity - self._in_flight

    def submit(self, job: J) -> bool:
        """Queue ``job``; False (nothing queued) when ``capacity`` jobs are in flight."""
        self._raise_if_failed()
        if not self._started:
            raise WorkerError(f"{self.name}: submit before start()")
        if self._in_flight >= self.capacity:
            return False
        self._inbox.put_nowait(job)  # never full: queued <= in flight < capacity
        self._in_flight += 1
        return True

    def collect(self) -> list[R]:
        """The results finished since the last call (no waiting)."""
        self._raise_if_failed()
        with self._cond:
            out, self._done = self._done, []
        self._in_flight -= len(out)
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has a result (or the worker failed: then raise); False on
        timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._error is not None or len(self._done) >= self._in_flight, timeout)
        self._raise_if_failed()
        return ok

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread after the batch it is on and join it (at most ``timeout`` seconds)."""
        if not self._started or not self._thread.is_alive():
            return
        with contextlib.suppress(queue.Full):  # cannot happen (see submit); never hang in shutdown
            self._inbox.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s still busy %.1f s after close; left to finish as a daemon thread", self.name, timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err = self._error
            raise WorkerError(f"{self.name} failed: {type(err).__name__}: {err}") from err

    # -- the thread ------------------------------------------------------------------------------
    def _lower_priority(self) -> None:
        if self.nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:  # Linux: PRIO_PROCESS with a thread id sets that thread's niceness alone
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        except OSError as exc:
            log.debug("%s: could not lower its priority: %s", self.name, exc)

    def _loop(self) -> None:
        self._lower_priority()
        while True:
            job = self._inbox.get()
            if job is _STOP:
                return
            jobs, stop = [job], False
            while len(jobs) < self.batch:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
            try:
                results = self._fn(jobs)
                if len(results) != len(jobs):
                    raise RuntimeError(f"expected {len(jobs)} results, found {len(results)}")
            except BaseException as exc:  # handed to the producer, which raises it
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._done.extend(results)
                self._cond.notify_all()
            if stop:
                return
