"""The runtime: threads, bounded hand-offs, statistics and orderly shutdown of one lane.

Threads: capture (source -> one-slot hand-off), detect (segment + boxes), update (track + classify +
events, the only thread that touches per-frame state or creates events) and the caller's thread for
output (the overlay drawn once, then every FrameOutput; the stats line). Hand-offs hold one item each,
so a frame is never older than the work in flight. Their policy is named: a realtime source (live, or
a paced file) drops the oldest unread item (counted); an offline file waits, so every frame is
processed and every processed frame is output. The runtime is built by ``stream.app``.

Classification: for a realtime source the threaded runtime has the classifier embed on a worker
thread of its own, so the update thread never waits for the embedder; offline (and single-threaded)
it embeds inline, its budget clocked by frame index, so a file gives the same events on every
machine. A stage that fails stops the run; ``run()`` then raises ``StageFailed`` (after the summary
event and an orderly shutdown), so the failure surfaces as one error, never as a hang.
"""

from __future__ import annotations

import enum
import json
import logging
import queue
import sys
import threading
import time
from collections import deque
from typing import IO, Any, Protocol

import numpy as np

from stream.events import EventFactory
from stream.pipeline import Detected, Pipeline
from stream.sources.base import Source, SourceStatus
from stream.stats import RunStats
from stream.types import FrameResult

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often blocked threads look at the stop flag
DEFAULT_FPS = 30.0  # the classify budget's frame clock for a file that does not state its rate


class StageFailed(RuntimeError):
    """A stage (detect, update, or the classifier's worker behind it) raised; the run was stopped."""


class SinksLike(Protocol):
    def publish(self, event: dict) -> None: ...
    def close(self) -> None: ...


class FrameObserver(Protocol):
    """Told of every processed frame (update thread) and every overlay drawn (output thread); must
    return in microseconds (the HTTP lane: histograms, and the newest result for the live view)."""

    def processed(self, result: FrameResult, age_ms: float) -> None: ...
    def drawn(self, overlay_ms: float) -> None: ...


class DrawerLike(Protocol):
    def draw(self, result: FrameResult, status: str = "") -> np.ndarray: ...


class FrameOutput(Protocol):
    """Consumes each output frame's annotated image on the output thread (window, recorder, live view).

    ``image`` is the overlay drawn once for all outputs; never modify it. Return False when the user
    asked to stop (a window's 'q').
    """

    def write(self, image: np.ndarray, result: FrameResult) -> bool: ...
    def close(self) -> None: ...


class Policy(enum.Enum):
    """What a full hand-off does with a new item."""

    DROP_OLDEST = "drop-oldest"  # replace the unread item and count it (realtime sources)
    WAIT = "wait"  # block the producer until the consumer takes it (offline files)


class Handoff:
    """A one-item hand-off between two threads with a named ``Policy``; a blocked ``put`` gives up
    when ``stop`` is set. The end-of-stream marker is never dropped."""

    def __init__(self, stop: threading.Event, policy: Policy) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._stop = stop
        self.policy = policy
        self.dropped = 0

    def put(self, item: object) -> None:
        drop = self.policy is Policy.DROP_OLDEST and item is not END
        while not self._stop.is_set():
            try:
                if drop:
                    self._q.put_nowait(item)
                else:
                    self._q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if drop:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self) -> object | None:
        """The next item, or None when nothing arrived within ``POLL_S``."""
        try:
            return self._q.get(timeout=POLL_S)
        except queue.Empty:
            return None


END = object()  # the end-of-stream marker passed through every hand-off


class StatusInbox:
    """Source status updates, queued from the capture thread, turned into events on the update thread.

    Created before the source (which reports into ``put``) and the runtime (which drains it)."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: deque[SourceStatus] = deque(maxlen=maxlen)

    def put(self, status: SourceStatus) -> None:
        self._items.append(status)

    def drain(self) -> list[SourceStatus]:
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out


class Runtime:
    """Runs one source through one pipeline until the source ends or ``stop()`` is called.

    ``overlay`` draws each output frame once for every ``outputs`` entry (not called when there are
    none). ``inbox`` receives the source's status updates (``StatusInbox.put`` is the source's
    callback). ``run()`` closes the sinks and outputs when it returns.
    """

    def __init__(
        self,
        source: Source,
        pipeline: Pipeline,
        events: EventFactory,
        sinks: SinksLike,
        outputs: list[FrameOutput],
        *,
        overlay: DrawerLike | None = None,
        inbox: StatusInbox | None = None,
        threaded: bool = True,
        stats_interval_s: float = 5.0,
        shutdown_timeout_s: float = 1.0,
        frames_log: IO[str] | None = None,
        stderr: IO[str] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if outputs and overlay is None:
            raise ValueError("Runtime: outputs need an overlay to draw their frames")
        self.source = source
        self.pipeline = pipeline
        self.events = events
        self.sinks = sinks
        self.outputs = outputs
        self.overlay = overlay
        self.inbox = inbox or StatusInbox()
        self.threaded = threaded
        self.policy = Policy.DROP_OLDEST if source.properties.realtime else Policy.WAIT
        self.stats_interval_s = stats_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.frames_log = frames_log
        self.stderr = stderr or sys.stderr
        self.stats = RunStats()
        self._stop = stop or threading.Event()
        self._fps_window: deque[float] = deque(maxlen=60)
        self._last_stats = time.monotonic()
        self.observer: FrameObserver | None = None  # set by the app (stream.outputs.lane.LaneHttp)
        self._failure: tuple[str, BaseException] | None = None

    def stop(self) -> None:
        """Ask the run to end (any thread); ``run()`` returns within about ``shutdown_timeout_s``."""
        self._stop.set()

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run to the end of the source (or ``stop()``); the summary. Raises StageFailed when a stage
        failed (the summary event has been published and everything closed by then)."""
        self.pipeline.warm_up()
        self.stats = RunStats()
        self._failure = None
        realtime = self.policy is Policy.DROP_OLDEST
        fps = self.source.properties.fps or DEFAULT_FPS
        self.source.analysis_size = self.pipeline.analysis_size()  # large frames scaled as decoded
        self.pipeline.start(background=self.threaded and realtime, fps=None if realtime else fps)
        try:
            if self.threaded:
                self._run_threaded()
            else:
                self._run_sequential()
        finally:
            self._emit(self.pipeline.finish())
            self.pipeline.close()
            self._drain_status()
            self.stats.frames_skipped = self.source.frames_skipped
            self.stats.classify = self.pipeline.classifier.stats()
            summary = self.stats.summary()
            self._emit([self.events.summary(summary)])
            self.sinks.close()
            for out in self.outputs:
                out.close()
            if not self.threaded:
                self.source.close()
        if self._failure is not None:
            stage, exc = self._failure
            raise StageFailed(f"{stage} stage failed: {type(exc).__name__}: {exc}") from exc
        return summary

    def _fail(self, stage: str, exc: BaseException) -> None:
        log.debug("%s stage failed", stage, exc_info=True)
        if self._failure is None:
            self._failure = (stage, exc)
        self._stop.set()

    def _run_sequential(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                break
            self.stats.frames_read += 1
            self._drain_status()
            result = self._update(self.pipeline.detect(frame))
            if not self._output(result):
                break

    def _run_threaded(self) -> None:
        frames = Handoff(self._stop, self.policy)
        detected = Handoff(self._stop, Policy.WAIT)
        results = Handoff(self._stop, self.policy)
        threads = [
            threading.Thread(target=self._capture_loop, args=(frames,), name="capture", daemon=True),
            threading.Thread(target=self._detect_loop, args=(frames, detected), name="detect", daemon=True),
            threading.Thread(target=self._update_loop, args=(detected, results), name="update", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            while True:
                item = results.get()
                if item is END:
                    break
                if item is None:
                    self._maybe_stats()
                    if self._stop.is_set() and not threads[2].is_alive():
                        break
                    continue
                assert isinstance(item, FrameResult)
                if not self._output(item):
                    self._stop.set()
        finally:
            self._stop.set()
            # The stages first (their results are flushed); capture last and briefly: it may still be
            # closing a dead network stream, which it finishes on its own (a daemon thread).
            deadline = time.monotonic() + self.shutdown_timeout_s
            for t in (threads[2], threads[1], threads[0]):
                t.join(max(0.0, deadline - time.monotonic()))
                deadline = min(deadline, time.monotonic() + self.shutdown_timeout_s / 4)
            busy = [t.name for t in threads[1:] if t.is_alive()]
            if busy:
                log.warning("stages still busy at shutdown: %s", ", ".join(busy))
            self.stats.frames_dropped = frames.dropped
            self.stats.results_dropped = results.dropped

    def _capture_loop(self, frames: Handoff) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self.stats.frames_read += 1
                frames.put(frame)
                self.stats.frames_dropped = frames.dropped  # live, for /metrics
        except Exception:  # a failed source ends the run cleanly; the CLI reports it
            log.exception("capture failed")
        finally:
            frames.put(END)
            # Closing a stalled network stream can take most of a second (RTSP teardown to a silent
            # peer): done here, it never holds up shutdown, which waits for this thread at most
            # shutdown_timeout_s.
            self.source.close()

    def _detect_loop(self, frames: Handoff, detected: Handoff) -> None:
        try:
            while not self._stop.is_set():
                item = frames.get()
                if item is None:
                    continue
                if item is END:
                    break
                detected.put(self.pipeline.detect(item))  # type: ignore[arg-type]
        except Exception as exc:
            self._fail("detect", exc)
        finally:
            detected.put(END)

    def _update_loop(self, detected: Handoff, results: Handoff) -> None:
        try:
            while not self._stop.is_set():
                item = detected.get()
                self._drain_status()
                if item is None:
                    continue
                if item is END:
                    break
                assert isinstance(item, Detected)
                results.put(self._update(item))
        except Exception as exc:
            self._fail("update", exc)
        finally:
            results.put(END)

    # -- per frame ------------------------------------------------------------------------------
    def _update(self, item: Detected) -> FrameResult:
        result = self.pipeline.update(item)
        self._emit(list(result.events))
        age = (time.monotonic() - result.frame.t_capture) * 1000.0
        st = self.stats
        st.frames_processed += 1
        st.frame_age.add(age)
        for name in ("segment", "boxes", "track", "classify"):
            st.stages[name].add(getattr(result.times, name))
        if self.observer is not None:
            self.observer.processed(result, age)
        self._fps_window.append(time.monotonic())
        if self.frames_log is not None:
            self._log_frame(result, age)
        return result

    def _emit(self, events: list[dict]) -> None:
        for ev in events:
            self.sinks.publish(ev)
        self.stats.events += len(events)

    def _drain_status(self) -> None:
        for status in self.inbox.drain():
            self._emit([self.events.status(status.type, status.detail)])

    def _log_frame(self, result: FrameResult, age_ms: float) -> None:
        assert self.frames_log is not None
        f = result.frame
        t = result.times
        rec = {
            "frame_index": f.index,
            "capture_utc": f.utc_capture,
            "stage_ms": {s: round(getattr(t, s), 3) for s in ("segment", "boxes", "track", "classify")},
            "age_ms": round(age_ms, 2),
            "tracks": [
                {
                    "track_id": v.track_id,
                    "bbox": list(v.xyxy),
                    "label": v.label.product if v.label else None,
                    "score": round(v.label.score, 4) if v.label else None,
                }
                for v in result.tracks
            ],
        }
        self.frames_log.write(json.dumps(rec) + "\n")

    def fps(self) -> float:
        w = self._fps_window
        return (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0

    def status_line(self) -> str:
        st = self.stats
        age = st.frame_age.summary()["p50"] if len(st.frame_age) else 0.0
        return (
            f"{self.fps():5.1f} fps | age p50 {age:.0f} ms | read {st.frames_read} "
            f"processed {st.frames_processed} dropped {st.frames_dropped}"
        )

    def _output(self, result: FrameResult) -> bool:
        """Draw the overlay once and hand it to every output; False when one asked to stop."""
        keep_going = True
        if self.outputs:
            assert self.overlay is not None
            t0 = time.perf_counter()
            image = self.overlay.draw(result, self.status_line())
            image.flags.writeable = False  # shared by every output
            for out in self.outputs:
                keep_going = out.write(image, result) and keep_going
            self.stats.frames_output += 1
            overlay_ms = (time.perf_counter() - t0) * 1000.0
            self.stats.stages["overlay"].add(overlay_ms)
            if self.observer is not None:
                self.observer.drawn(overlay_ms)
        self._maybe_stats()
        return keep_going

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if self.stats_interval_s and now - self._last_stats >= self.stats_interval_s:
            print(self.status_line(), file=self.stderr, flush=True)
            self._last_stats = now
