"""Prometheus metrics of one lane, in a registry of its own (never the process-global one: two lanes
may share a process, and tests build many).

Counters and gauges are read at scrape time from snapshots (``counters()``, ``sinks()``, the
``LiveView``), so they cost the frame loop nothing. The two histograms (frame age, per-stage time)
must see every frame, so the runtime calls ``observe_frame`` once per processed frame: a few
microseconds (one lock and a bucket search per histogram, children bound at construction).

Every name starts with ``checkout_stream_``; every series carries ``lane``. ``METRICS`` lists them
all with their meaning; a test keeps the README's table in step with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream.outputs.live import LiveView

PREFIX = "checkout_stream_"
STAGES = ("segment", "boxes", "track", "classify", "overlay")
AGE_BUCKETS = (0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0)

# name (without the prefix and, for counters, without _total) -> (type, labels beyond lane, meaning)
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "up": ("gauge", (), "1 while the lane's runtime runs (0 once it has ended)"),
    "ready": ("gauge", (), "1 when /readyz answers 200: models loaded, source online, frames flowing"),
    "frames_read": ("counter", (), "frames decoded from the source"),
    "frames_processed": ("counter", (), "frames through every stage (segment to events)"),
    "frames_dropped": ("counter", (), "stale frames replaced at capture before processing (realtime sources)"),
    "source_online": (
        "gauge",
        (),
        "1 while a live source is connected, 0 while it reconnects; a file counts as online while frames flow",
    ),
    "source_reconnects": ("counter", (), "times a live source came back after going offline"),
    "frame_age_seconds": ("histogram", (), "capture to end of processing, per frame"),
    "stage_seconds": (
        "histogram",
        ("stage",),
        "time per frame in each stage (segment, boxes, track, classify, overlay)",
    ),
    "events": ("counter", ("type",), "events emitted, by type (item.entered, item.classified, ...)"),
    "sink_published": ("counter", ("sink",), "events handed to each sink"),
    "sink_delivered": ("counter", ("sink",), "events a delivery sink got acknowledged (MQTT, webhook)"),
    "sink_dropped": ("counter", ("sink",), "events a sink dropped because it could not keep up"),
    "sink_errors": ("counter", ("sink",), "events a sink failed to write or send"),
    "sink_queue_depth": ("gauge", ("sink",), "events waiting in a sink's queue or spool (sinks that report it)"),
    "sink_clients": ("gauge", ("sink",), "clients connected to a server sink (TCP)"),
    "sink_clients_cut": ("counter", ("sink",), "clients disconnected for falling behind"),
    "sink_clients_rejected": ("counter", ("sink",), "clients refused (bad or missing token, bad hello)"),
    "basket_items": ("gauge", (), "items on the open basket's receipt (0 when no basket is open)"),
    "live_frames_encoded": ("counter", (), "JPEGs encoded for the live view (on demand, capped at http.live_fps)"),
    "model_info": ("info", ("model",), "identity of each loaded model: name, version, sha256, provider"),
    "catalog_info": ("info", (), "identity of the catalog: products, vectors, index, embedder"),
}

# metric -> the SinkSet.stats() per-sink keys it is read from (the first one a sink reports)
_SINK_KEYS = {
    "sink_published": ("published",),
    "sink_delivered": ("delivered",),
    "sink_dropped": ("dropped",),
    "sink_errors": ("errors",),
    "sink_queue_depth": ("queued", "spooled"),
    "sink_clients": ("clients",),
    "sink_clients_cut": ("clients_cut",),
    "sink_clients_rejected": ("clients_rejected",),
}


def _family(name: str) -> Any:
    kind, extra, doc = METRICS[name]
    labels = ["lane", *extra]
    if kind == "counter":
        return CounterMetricFamily(PREFIX + name, doc, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    return InfoMetricFamily(PREFIX + name.removesuffix("_info"), doc, labels=labels)


class LaneMetrics(Collector):
    """The metrics of one lane. ``counters()`` returns at least frames_read, frames_processed and
    frames_dropped (``RunStats`` fields); ``sinks()`` returns ``SinkSet.stats()``; ``ready()`` is
    the readiness verdict; ``running()`` whether the runtime still runs. ``identity`` holds
    {"models": {role: {name, version, sha256, provider}}, "catalog": {...}} (strings or numbers).
    """

    def __init__(
        self,
        lane: str,
        view: LiveView,
        counters: Callable[[], Mapping[str, Any]],
        *,
        sinks: Callable[[], Mapping[str, Any]] | None = None,
        ready: Callable[[], bool] | None = None,
        running: Callable[[], bool] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.lane = lane
        self.view = view
        self._counters = counters
        self._sinks = sinks
        self._ready = ready
        self._running = running
        self.identity = dict(identity or {})
        self.registry = CollectorRegistry(auto_describe=False)
        age = Histogram(
            PREFIX + "frame_age_seconds",
            METRICS["frame_age_seconds"][2],
            ["lane"],
            registry=self.registry,
            buckets=AGE_BUCKETS,
        )
        stage = Histogram(
            PREFIX + "stage_seconds",
            METRICS["stage_seconds"][2],
            ["lane", "stage"],
            registry=self.registry,
            buckets=STAGE_BUCKETS,
        )
        self._age = age.labels(lane)
        self._stage = {s: stage.labels(lane, s) for s in STAGES}
        self.registry.register(self)

    def observe_frame(self, stage_ms: Mapping[str, float], age_ms: float | None) -> None:
        """One processed frame: its age (None: not known at this call) and each stage's time, in
        milliseconds (unknown stages are ignored)."""
        if age_ms is not None:
            self._age.observe(age_ms / 1000.0)
        for name, ms in stage_ms.items():
            child = self._stage.get(name)
            if child is not None:
                child.observe(ms / 1000.0)

    def collect(self) -> Iterator[Metric]:
        lane = [self.lane]
        c = self._counters()
        source = self.view.source()
        flowing = self.view.seconds_since_frame() is not None
        online = source["online"] if source["online"] is not None else flowing
        for name, value in (
            ("up", self._running() if self._running else True),
            ("ready", self._ready() if self._ready else flowing),
            ("frames_read", c.get("frames_read", 0)),
            ("frames_processed", c.get("frames_processed", 0)),
            ("frames_dropped", c.get("frames_dropped", 0)),
            ("source_online", online),
            ("source_reconnects", source["reconnects"]),
            ("basket_items", self.view.basket_items()),
            ("live_frames_encoded", self.view.encoded),
        ):
            fam = _family(name)
            fam.add_metric(lane, float(value))
            yield fam
        events = _family("events")
        for kind, n in sorted(self.view.events_by_type().items()):
            events.add_metric([self.lane, kind], float(n))
        yield events
        yield from self._sink_families()
        yield from self._info_families()

    def _sink_families(self) -> Iterator[Metric]:
        fams = {metric: _family(metric) for metric in _SINK_KEYS}
        per = [s for s in (self._sinks() if self._sinks else {}).get("sinks", ()) if s.get("sink") != "LiveView"]
        names = [str(s.get("sink", "sink")) for s in per]
        for i, stats in enumerate(per):
            # Two sinks of one kind (two TCP ports) get distinct labels: TcpSink, TcpSink-2, ...
            name = names[i] if names.count(names[i]) == 1 else f"{names[i]}-{names[: i + 1].count(names[i])}"
            for metric, fam in fams.items():
                value = next((stats[k] for k in _SINK_KEYS[metric] if isinstance(stats.get(k), int | float)), None)
                if value is not None:
                    fam.add_metric([self.lane, name], float(value))
        yield from fams.values()

    def _info_families(self) -> Iterator[Metric]:
        models = _family("model_info")
        for role, ident in sorted((self.identity.get("models") or {}).items()):
            models.add_metric([self.lane, role], {k: str(v) for k, v in ident.items()})
        yield models
        catalog = self.identity.get("catalog")
        if catalog:
            fam = _family("catalog_info")
            fam.add_metric([self.lane], {k: str(v) for k, v in catalog.items()})
            yield fam
