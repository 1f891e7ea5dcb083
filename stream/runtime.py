"""The composition root: threads, bounded hand-offs, statistics and orderly shutdown.

Threads: capture (source -> one-slot latest-frame buffer), detect (segment + boxes), update (track +
classify + events, the only thread that touches per-frame state or creates events) and the caller's
thread for output (overlay, window, recording, stats line). Hand-offs hold one item each, so a frame
is never older than the work in flight. Live sources drop stale frames at capture (counted); files
read offline apply back-pressure instead, so every frame is processed.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from stream.config import Config
from stream.events import EventFactory
from stream.pipeline import Detected, Pipeline
from stream.stages.boxes import BoxExtractor
from stream.stages.classify import Classifier
from stream.stages.protocols import CatalogLike, EmbedderLike, SegmenterLike
from stream.stages.segment import Segmenter
from stream.stages.track import Tracker
from stream.types import Frame, FrameResult

log = logging.getLogger(__name__)

STAGES = ("segment", "boxes", "track", "classify", "overlay")
POLL_S = 0.05  # how often blocked threads look at the stop flag


class SourceLike(Protocol):
    name: str
    is_live: bool

    def read(self) -> Frame | None: ...
    def close(self) -> None: ...


class SinksLike(Protocol):
    def publish(self, event: dict) -> None: ...
    def close(self) -> None: ...


class EventFactoryLike(Protocol):
    def status(self, type: str, detail: dict, frame_index: int | None = None) -> dict: ...
    def summary(self, summary: dict) -> dict: ...


class Percentiles:
    """The last ``window`` samples in a preallocated ring, with p50/p95/p99: memory is fixed from the
    start, however long the stream runs."""

    def __init__(self, window: int = 100_000) -> None:
        self._v = np.zeros(window, np.float64)
        self._n = 0  # samples ever added

    def add(self, value: float) -> None:
        self._v[self._n % len(self._v)] = value
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._v))

    def summary(self) -> dict[str, float]:
        if not self._n:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
        p50, p95, p99 = np.percentile(self._v[: len(self)], [50, 95, 99])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


@dataclass
class RunStats:
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    events: int = 0
    started: float = field(default_factory=time.monotonic)
    stages: dict[str, Percentiles] = field(default_factory=lambda: {s: Percentiles() for s in STAGES})
    frame_age: Percentiles = field(default_factory=Percentiles)

    def summary(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.started, 1e-9)
        return {
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "events": self.events,
            "wall_s": round(wall, 3),
            "fps": round(self.frames_processed / wall, 2),
            "stage_ms": {s: p.summary() for s, p in self.stages.items()},
            "frame_age_ms": self.frame_age.summary(),
        }


class FrameOutput(Protocol):
    """Something that consumes processed frames on the output thread (window, recorder...)."""

    def write(self, result: FrameResult, status: str) -> bool: ...  # False = user asked to stop
    def close(self) -> None: ...


class _Handoff:
    """A one-item hand-off between two threads. ``drop`` replaces an unread item (counted);
    otherwise ``put`` waits for the consumer (back-pressure), giving up when ``stop`` is set."""

    def __init__(self, stop: threading.Event, drop: bool) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._stop = stop
        self._drop = drop
        self.dropped = 0

    def put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                if self._drop and item is not _END:
                    self._q.put_nowait(item)
                else:
                    self._q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if self._drop:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self) -> object | None:
        try:
            return self._q.get(timeout=POLL_S)
        except queue.Empty:
            return None


_END = object()


class Runtime:
    """Runs one source through one pipeline until the source ends or ``stop()`` is called."""

    def __init__(self, source: SourceLike, pipeline: Pipeline, events: EventFactoryLike,
                 sinks: SinksLike, outputs: list[FrameOutput], *, threaded: bool = True,
                 stats_interval_s: float = 5.0, shutdown_timeout_s: float = 1.0,
                 frames_log: IO[str] | None = None, overlay: Callable[[FrameResult, str], Any] | None = None,
                 stderr: IO[str] | None = None, stop: threading.Event | None = None,
                 drop_stale: bool | None = None) -> None:
        self.source = source
        self.pipeline = pipeline
        self.events = events
        self.sinks = sinks
        self.outputs = outputs
        self.threaded = threaded
        # Live or paced sources drop stale frames at capture; offline files wait for the pipeline.
        self.drop_stale = bool(source.is_live) if drop_stale is None else drop_stale
        self.stats_interval_s = stats_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.frames_log = frames_log
        self.stderr = stderr or sys.stderr
        self.stats = RunStats()
        self._stop = stop or threading.Event()
        self._status: deque[tuple[str, dict]] = deque(maxlen=1000)
        self._fps_window: deque[float] = deque(maxlen=60)
        self._last_stats = time.monotonic()

    # -- called from other threads -------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def on_status(self, type: str, detail: dict) -> None:
        """Source callback (capture thread): queued, turned into events on the update thread."""
        self._status.append((type, detail))

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.pipeline.warm_up()
        self.stats = RunStats()
        try:
            if self.threaded:
                self._run_threaded()
            else:
                self._run_sequential()
        finally:
            self._emit(self.pipeline.finish())
            self._drain_status()
            summary = self.stats.summary()
            self._emit([self.events.summary(summary)])
            self.sinks.close()
            for out in self.outputs:
                out.close()
            if not self.threaded:
                self.source.close()
        return summary

    def _run_sequential(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                break
            self.stats.frames_read += 1
            result = self._update(self.pipeline.detect(frame))
            if not self._output(result):
                break

    def _run_threaded(self) -> None:
        frames = _Handoff(self._stop, drop=self.drop_stale)
        detected = _Handoff(self._stop, drop=False)
        results = _Handoff(self._stop, drop=True)  # the window shows the newest frame
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
                if item is _END:
                    break
                if item is None:
                    self._maybe_stats()
                    if self._stop.is_set() and not threads[2].is_alive():
                        break
                    continue
                if not self._output(item):  # type: ignore[arg-type]
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

    def _capture_loop(self, frames: _Handoff) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self.stats.frames_read += 1
                frames.put(frame)
        except Exception:  # a failed source ends the run cleanly; the CLI reports it
            log.exception("capture failed")
        finally:
            frames.put(_END)
            # Closing a stalled network stream can take most of a second (RTSP teardown to a silent
            # peer): done here, it never holds up shutdown, which waits for this thread at most
            # shutdown_timeout_s.
            self.source.close()

    def _detect_loop(self, frames: _Handoff, detected: _Handoff) -> None:
        try:
            while not self._stop.is_set():
                item = frames.get()
                if item is None:
                    continue
                if item is _END:
                    break
                detected.put(self.pipeline.detect(item))  # type: ignore[arg-type]
        except Exception:
            log.exception("detect stage failed")
            self._stop.set()
        finally:
            detected.put(_END)

    def _update_loop(self, detected: _Handoff, results: _Handoff) -> None:
        try:
            while not self._stop.is_set():
                item = detected.get()
                self._drain_status()
                if item is None:
                    continue
                if item is _END:
                    break
                results.put(self._update(item))  # type: ignore[arg-type]
        except Exception:
            log.exception("update stage failed")
            self._stop.set()
        finally:
            results.put(_END)

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
        self._fps_window.append(time.monotonic())
        if self.frames_log is not None:
            self._log_frame(result, age)
        return result

    def _emit(self, events: list[dict]) -> None:
        for ev in events:
            self.sinks.publish(ev)
        self.stats.events += len(events)

    def _drain_status(self) -> None:
        while self._status:
            type_, detail = self._status.popleft()
            self._emit([self.events.status(type_, detail)])

    def _log_frame(self, result: FrameResult, age_ms: float) -> None:
        f = result.frame
        t = result.times
        rec = {
            "frame_index": f.index,
            "capture_utc": f.utc_capture,
            "stage_ms": {s: round(getattr(t, s), 3) for s in ("segment", "boxes", "track", "classify")},
            "age_ms": round(age_ms, 2),
            "tracks": [
                {"track_id": v.track_id, "bbox": list(v.xyxy),
                 "label": v.label.product if v.label else None,
                 "score": round(v.label.score, 4) if v.label else None}
                for v in result.tracks
            ],
        }
        self.frames_log.write(json.dumps(rec) + "\n")  # type: ignore[union-attr]

    def fps(self) -> float:
        w = self._fps_window
        return (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0

    def status_line(self) -> str:
        st = self.stats
        age = st.frame_age.summary()["p50"] if len(st.frame_age) else 0.0
        return (f"{self.fps():5.1f} fps | age p50 {age:.0f} ms | read {st.frames_read} "
                f"processed {st.frames_processed} dropped {st.frames_dropped}")

    def _output(self, result: FrameResult) -> bool:
        status = self.status_line()
        keep_going = True
        t0 = time.perf_counter()
        for out in self.outputs:
            keep_going = out.write(result, status) and keep_going
        if self.outputs:
            self.stats.stages["overlay"].add((time.perf_counter() - t0) * 1000.0)
        self._maybe_stats()
        return keep_going

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if self.stats_interval_s and now - self._last_stats >= self.stats_interval_s:
            print(self.status_line(), file=self.stderr, flush=True)
            self._last_stats = now


def write_summary(summary: dict[str, Any], out: IO[str]) -> None:
    """The end-of-run summary for people (the machine-readable one is the run.summary event)."""
    print(f"frames: read {summary['frames_read']}, processed {summary['frames_processed']}, "
          f"dropped {summary['frames_dropped']}; {summary['fps']} fps over {summary['wall_s']} s; "
          f"{summary['events']} events", file=out)
    print(f"{'stage':<10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}", file=out)
    rows = list(summary["stage_ms"].items()) + [("frame age", summary["frame_age_ms"])]
    for name, p in rows:
        print(f"{name:<10}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}", file=out)


def open_frames_log(path: Path | None) -> IO[str] | None:
    return None if path is None else open(path, "w", buffering=1 << 16)  # noqa: SIM115


def build_runtime(cfg: Config, make_source: Callable[[Callable[[str, dict], None], threading.Event], SourceLike],
                  sinks: SinksLike, *, embedder: EmbedderLike | None = None,
                  catalog: CatalogLike | None = None, outputs: list[FrameOutput] | None = None,
                  frames_log: IO[str] | None = None, stop: threading.Event | None = None,
                  segmenter: SegmenterLike | None = None, run_id: str | None = None) -> Runtime:
    """Wire every stage from the config. ``make_source(on_status, stop)`` opens the source once the
    runtime exists, so the source can report ``source.online``/``offline`` to it."""
    stop = stop or threading.Event()
    segmenter = segmenter or Segmenter(cfg.segment)
    status_inbox: list[Runtime] = []

    def on_status(kind: str, detail: dict) -> None:
        if status_inbox:
            status_inbox[0].on_status(kind, detail)

    source = make_source(on_status, stop)
    events = EventFactory(run_id or uuid.uuid4().hex, source.name)
    pipeline = Pipeline(segmenter, BoxExtractor(cfg.boxes), Tracker(cfg.track),
                        Classifier(cfg.classify, embedder, catalog), events)
    rt = Runtime(source, pipeline, events, sinks, outputs or [], threaded=cfg.runtime.threaded,
                 stats_interval_s=cfg.runtime.stats_interval_s,
                 shutdown_timeout_s=cfg.runtime.shutdown_timeout_s, frames_log=frames_log, stop=stop,
                 drop_stale=source.is_live or getattr(source, "realtime", cfg.source.realtime))
    status_inbox.append(rt)
    return rt
