"""Many lanes in one process (``run --lanes FILE``): shared models, one runtime per lane.

What is shared and what is not:
- **models**: one ``Segmenter`` per distinct segmenter (``segment.model``, or a station's fitted one) and
  one ``Embedder`` per distinct ``classify.model``, so one ONNX Runtime session per model, not per lane
  (sessions are thread-safe; each lane calls them from its own threads). With
  ``segment.batch_window_ms`` > 0 the lanes' frames go through a ``SegmentBatcher`` (one call per batch);
- **catalogs**: one per (folder, embedder, ``catalog`` settings), shared by the lanes that name it;
- **sinks**: one set per distinct ``events`` section (lanes that agree share one MQTT session, one TCP
  port, one JSON Lines file), publishes serialised by a lock, closed once every lane has ended;
- **HTTP**: one server (``http.bind``), every lane's metrics in one scrape, ``?lane=NAME`` for the rest;
- **per lane**: source, tracker, classifier state, pipeline, basket, event factory (``seq`` per lane),
  runtime and its threads. A lane whose source fails (a missing file, a dead RTSP camera that keeps
  reconnecting) ends or retries on its own threads and never stalls another.

Every lane runs on its own thread (its runtime's output loop) and stops on its own stop flag, so a
file that ends stops its lane only; the process's stop flag (SIGINT) stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from stream.app import LaneLog
from stream.app import build_runtime as _build_runtime
from stream.config import Config, LaneSpec, SegmentConfig
from stream.outputs.lane import LanesHttp, lane_identity
from stream.outputs.overlay import Overlay
from stream.runtime import Runtime
from stream.sinks import SinkSet, make_sinks
from stream.sources.base import Source, StatusCallback
from stream.sources.file import open_source
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder
from stream.stages.segment import SegmentBatcher, Segmenter
from stream.station import use as station_use

log = logging.getLogger(__name__)

# (lane, status callback, stop flag) -> the lane's Source (default: stream.sources.file.open_source).
OpenLaneSource = Callable[[LaneSpec, StatusCallback, threading.Event], Source]


def _open_file_or_stream(lane: LaneSpec, on_status: StatusCallback, stop: threading.Event) -> Source:
    return open_source(lane.source, lane.config.source, on_status, stop)


class SharedSinks:
    """One ``SinkSet`` published to by several lanes' update threads: a lock keeps each publish whole;
    ``close`` is the owner's (``run_lanes``), after every lane has ended. ``view()`` is what a lane's
    runtime holds (its ``close`` at the end of the lane's run does nothing)."""

    def __init__(self, sinks: SinkSet) -> None:
        self.sinks = sinks
        self._lock = threading.Lock()

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.sinks.publish(event)

    def stats(self) -> dict[str, Any]:
        return self.sinks.stats()

    def close(self) -> None:
        """A lane ended: the other lanes still publish (the owner closes ``sinks``)."""


class _SinkStats:
    """A lane's sink statistics for its metrics: the real sinks (shared ones count every lane's events)."""

    def __init__(self, own: Any, lane_set: SinkSet) -> None:
        self._own = own
        self._set = lane_set

    def stats(self) -> dict[str, Any]:
        if isinstance(self._own, SharedSinks):
            return {**self._set.stats(), "sinks": self._own.stats()["sinks"]}
        return self._set.stats()


@dataclass
class Models:
    """Models and catalogs built once per distinct setting and shared by the lanes."""

    segmenters: dict[Any, Any] = field(default_factory=dict)
    embedders: dict[Any, Embedder] = field(default_factory=dict)
    catalogs: dict[Any, Catalog] = field(default_factory=dict)
    batchers: list[SegmentBatcher] = field(default_factory=list)

    def segmenter(self, cfg: Config, seg_cfg: SegmentConfig, lanes: int) -> Any:
        """The segmenter of ``seg_cfg`` (the lane's, or its station's fitted one), shared by the
        ``lanes`` lanes that name the same model settings; behind a ``SegmentBatcher`` when
        ``segment.batch_window_ms`` > 0 (a client per lane)."""
        key = seg_cfg.model
        if key not in self.segmenters:
            seg = Segmenter(seg_cfg)
            if cfg.segment.batch_window_ms > 0:
                batcher = SegmentBatcher(seg, cfg.segment.batch_window_ms / 1000.0, max_batch=lanes)
                self.batchers.append(batcher)
                self.segmenters[key] = batcher
            else:
                self.segmenters[key] = seg
        shared = self.segmenters[key]
        return shared.client() if isinstance(shared, SegmentBatcher) else shared

    def recognition(self, cfg: Config, catalog_dir: Path | None) -> tuple[Embedder | None, Catalog | None]:
        if catalog_dir is None:
            return None, None
        if cfg.classify.model not in self.embedders:
            self.embedders[cfg.classify.model] = Embedder(cfg.classify.model)
        embedder = self.embedders[cfg.classify.model]
        key = (Path(catalog_dir).resolve(), cfg.classify.model, cfg.catalog)
        if key not in self.catalogs:
            self.catalogs[key] = Catalog.load(Path(catalog_dir), embedder, cfg.catalog)
        return embedder, self.catalogs[key]


def _catalog_dir(lane: LaneSpec, default: Path | None) -> Path | None:
    return Path(lane.catalog) if lane.catalog is not None else default


def run_lanes(
    lanes: Sequence[LaneSpec],
    stop: threading.Event,
    *,
    catalog: Path | None = None,
    frames_log: Path | None = None,
    open_source: OpenLaneSource | None = None,
    sinks: Callable[[LaneSpec], Any] | None = None,
    models: Models | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every lane until its source ends (or ``stop`` is set); {lane name: its run summary}. A lane
    that could not start (its source cannot open) has ``{"error": "..."}`` instead and the others run.

    Models, catalogs, sinks and the HTTP server are built here, before any lane starts, so a bad model
    or catalog fails the whole run at once. ``catalog`` is the catalog of lanes that name none;
    ``sinks(lane)`` replaces the configured sinks (tests: a ``MemorySink``); ``on_ready`` is called
    with {lane name: runtime} once every lane's runtime is built or has failed (tests, benchmarks).
    """
    if not lanes:
        raise ValueError("run_lanes: no lanes")
    with contextlib.ExitStack() as stack:
        run = _LanesRun(
            lanes,
            stack,
            models=models or Models(),
            catalog=catalog,
            sinks=sinks,
            open_source=open_source or _open_file_or_stream,
        )
        log_file = stack.enter_context(open(frames_log, "w", buffering=1 << 16)) if frames_log else None
        threads = [
            threading.Thread(target=run.lane_main, args=(lane, log_file), name=f"lane:{lane.name}") for lane in lanes
        ]
        for t in threads:
            t.start()
        run.built.wait()
        if on_ready is not None:
            on_ready(dict(run.runtimes))
        while any(t.is_alive() for t in threads):
            if stop.wait(0.1):
                for ev in run.stops.values():
                    ev.set()
                break
        for t in threads:
            t.join()
    return {lane.name: run.summaries.get(lane.name, {"error": "did not run"}) for lane in lanes}


class _LanesRun:
    """What ``run_lanes`` shares between its lanes' threads (built on the caller's thread)."""

    def __init__(
        self,
        lanes: Sequence[LaneSpec],
        stack: contextlib.ExitStack,
        *,
        models: Models,
        catalog: Path | None,
        sinks: Callable[[LaneSpec], Any] | None,
        open_source: OpenLaneSource,
    ) -> None:
        first = lanes[0].config
        self.open_source = open_source
        self.http = stack.enter_context(LanesHttp(first.http, first.events.token)) if first.http.bind else None
        self.recognition = {lane.name: models.recognition(lane.config, _catalog_dir(lane, catalog)) for lane in lanes}
        unrecognised = [lane.name for lane in lanes if _catalog_dir(lane, catalog) is None]
        if unrecognised:
            log.warning("no catalog for lane(s) %s: their items are tracked and reported as unrecognised", unrecognised)
        # Two lanes share a segmenter when their model settings agree (a station's fitted model has a path
        # of its own); each profile is read once here.
        seg_cfgs = [station_use.segment_config(lane.config, station_use.load(lane.config)) for lane in lanes]
        keys = [c.model for c in seg_cfgs]
        self.segmenters = {
            lane.name: models.segmenter(lane.config, c, keys.count(c.model))
            for lane, c in zip(lanes, seg_cfgs, strict=True)
        }
        shared: dict[Any, SharedSinks] = {}
        self.sinks: dict[str, Any] = {}
        for lane in lanes:
            if sinks is not None:
                self.sinks[lane.name] = sinks(lane)
                continue
            key = lane.config.events
            if key not in shared:
                shared[key] = SharedSinks(SinkSet(make_sinks(key.sinks, key)))
                stack.callback(shared[key].sinks.close)
            self.sinks[lane.name] = shared[key]
        self.log_lock = threading.Lock()
        self.built = threading.Barrier(len(lanes) + 1)
        self.stops = {lane.name: threading.Event() for lane in lanes}
        self.runtimes: dict[str, Runtime] = {}
        self.summaries: dict[str, dict[str, Any]] = {}

    def lane_main(self, lane: LaneSpec, log_file: IO[str] | None) -> None:
        """One lane's thread: build its runtime (then meet the others at ``built``), run it."""
        name = lane.name
        waited = False
        http_lane = None
        try:
            http_lane = self.http.lane(name) if self.http is not None else None
            own = self.sinks[name]
            lane_set = SinkSet([own, *([http_lane.view] if http_lane else [])])
            tagged = cast(IO[str], LaneLog(log_file, name, self.log_lock)) if log_file is not None else None
            embedder, cat = self.recognition[name]
            try:
                # No window or recording: the live view (if any) draws the newest frame on demand.
                rt = _build_runtime(
                    lane.config,
                    lambda on_status, lane_stop: self.open_source(lane, on_status, lane_stop),
                    lane_set,
                    embedder=embedder,
                    catalog=cat,
                    frames_log=tagged,
                    stop=self.stops[name],
                    segmenter=self.segmenters[name],
                )
                self.runtimes[name] = rt
            finally:
                waited = True
                self.built.wait()
            if http_lane is not None:
                draw = Overlay(lane.config.overlay, rt.pipeline.zones.zones)
                http_lane.attach(
                    rt,
                    _SinkStats(own, lane_set),
                    lane_identity(rt.pipeline.segmenter, embedder, cat),
                    draw=draw,
                    baskets=rt.pipeline.baskets,
                )
                rt.observer = http_lane
            try:
                self.summaries[name] = rt.run()
            finally:
                rt.source.close()
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            log.error("lane %s: %s", name, text)
            log.debug("lane %s failed", name, exc_info=True)
            self.summaries[name] = {"error": text}
            if http_lane is not None:
                http_lane.view.close()  # /readyz?lane=NAME: "the run has ended", not "still loading"
        finally:
            if not waited:
                self.built.wait()
