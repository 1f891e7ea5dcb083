"""The composition root: builds one lane in an explicit order and tears it down in reverse.

Order: config (given) -> station profile (``station.path``: its fitted segmenter, empty-station gate
and zones) -> models (segmenter, embedder) -> catalog -> stages (boxes, tracker, classifier,
zones, pipeline) -> sinks -> source -> outputs (they need the source's frame rate) -> runtime.
Everything built is registered on an ``ExitStack`` as it is made, so a failure half-way (a bad source,
a refused port) releases what was already open, newest first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from stream.baskets import Baskets
from stream.config import Config
from stream.events import EventFactory
from stream.outputs.display import Recorder, Window, display_available
from stream.outputs.lane import LaneHttp, lane_identity
from stream.outputs.overlay import Overlay
from stream.pipeline import Pipeline
from stream.runtime import FrameOutput, Runtime, SinksLike, StatusInbox
from stream.sinks import SinkSet, make_sinks
from stream.sources.base import Source, SourceProperties, StatusCallback
from stream.stages.boxes import BoxExtractor
from stream.stages.catalog import Catalog
from stream.stages.classify import Classifier, LargestItemCrop
from stream.stages.embed import Embedder
from stream.stages.protocols import CatalogLike, EmbedderLike, SegmenterLike
from stream.stages.segment import Segmenter
from stream.stages.station import GatedSegmenter
from stream.stages.track import Tracker
from stream.station import use as station_use

log = logging.getLogger(__name__)

# Opens the source once the runtime's status inbox exists: (status callback, stop flag) -> Source.
OpenSource = Callable[[StatusCallback, threading.Event], Source]
# Builds the frame outputs once the source's properties (frame rate) are known.
MakeOutputs = Callable[[SourceProperties], Sequence[FrameOutput]]

DEFAULT_FPS = 30.0  # a recording's rate when the source does not say (a live stream not yet connected)


@dataclass(frozen=True)
class RunOptions:
    """What a command line run adds to the config.

    catalog: a catalog folder (``catalog build``); photos: {product: [BGR images]} embedded at start
    instead (the demo); neither: items are tracked and reported as unrecognised.
    record: write the annotated video there; display: show it in a window (when one can open);
    frames_log: one JSON line per processed frame.
    """

    catalog: Path | None = None
    photos: dict[str, list[np.ndarray]] | None = None
    record: Path | None = None
    display: bool = False
    frames_log: Path | None = None


def catalog_item_crop(cfg: Config, *, always: bool = False) -> LargestItemCrop | None:
    """The item views of catalog photos (``catalog.item_views``): the default segmenter and box stage,
    cut with the runtime's crop settings; None when item views are off (unless ``always``)."""
    if not (cfg.catalog.item_views or always):
        return None
    return LargestItemCrop(
        Segmenter(cfg.segment),
        BoxExtractor(cfg.boxes),
        cfg.classify.crop_padding,
        cfg.classify.mask_background,
    )


def load_recognition(
    cfg: Config, catalog_dir: Path | None = None, photos: dict[str, list[np.ndarray]] | None = None
) -> tuple[Embedder | None, Catalog | None]:
    """(embedder, catalog), or (None, None) when there is nothing to recognise against."""
    if catalog_dir is None and photos is None:
        log.warning("no --catalog given: items are tracked and reported as unrecognised")
        return None, None
    embedder = Embedder(cfg.classify.model)
    if photos is not None:
        return embedder, Catalog.from_images(photos, embedder, cfg.catalog, catalog_item_crop(cfg))
    assert catalog_dir is not None
    return embedder, Catalog.load(catalog_dir, embedder, cfg.catalog)


def window_and_recorder(cfg: Config, record: Path | None, display: bool) -> MakeOutputs:
    """The outputs a run asked for: a window when ``display`` and one can open, a recording at the
    source's own frame rate when ``record``."""

    def make(props: SourceProperties) -> list[FrameOutput]:
        outputs: list[FrameOutput] = []
        if display and display_available():
            outputs.append(Window(cfg.overlay.window_name))
        elif display:
            log.info("no display available (headless OpenCV or no $DISPLAY): not opening a window")
        if record is not None:
            outputs.append(Recorder(record, props.fps or DEFAULT_FPS))
            log.warning("recording the annotated video to %s", record)
        return outputs

    return make


def build_runtime(
    cfg: Config,
    open_source: OpenSource,
    sinks: SinksLike,
    *,
    embedder: EmbedderLike | None = None,
    catalog: CatalogLike | None = None,
    outputs: MakeOutputs | None = None,
    frames_log: IO[str] | None = None,
    stop: threading.Event | None = None,
    segmenter: SegmenterLike | None = None,
    run_id: str | None = None,
) -> Runtime:
    """Wire one lane from the config and the pieces given (models, catalog and sinks are the caller's:
    they may be shared). A station profile (``station.path``) supplies the segmenter when it holds a
    fitted one (unless ``segmenter`` is given), gates the segmenter's maps with its empty-station
    reference, and gives the zones unless the config names its own. The source is opened here, after
    the stages, so that a slow camera connect never races model loading; it reports its status into
    the runtime's inbox."""
    stop = stop if stop is not None else threading.Event()
    station = station_use.load(cfg)
    if segmenter is None:
        segmenter = Segmenter(station_use.segment_config(cfg, station))
    if station is not None:
        segmenter = GatedSegmenter(segmenter, station)
    zones = station_use.zones(cfg, station)
    classifier = Classifier(cfg.classify, embedder, catalog)
    inbox = StatusInbox()
    source = open_source(inbox.put, stop)
    props = source.properties
    events = EventFactory(run_id or uuid.uuid4().hex, props.name, lane=cfg.lane.name)  # every event names its lane
    baskets = Baskets(cfg.basket, events) if cfg.basket.enabled else None
    pipeline = Pipeline(
        segmenter, BoxExtractor(cfg.boxes), Tracker(cfg.track), classifier, events, baskets=baskets, zones=zones
    )
    frame_outputs = list(outputs(props)) if outputs is not None else []
    return Runtime(
        source,
        pipeline,
        events,
        sinks,
        frame_outputs,
        overlay=Overlay(cfg.overlay, zones) if frame_outputs else None,
        inbox=inbox,
        threaded=cfg.runtime.threaded,
        stats_interval_s=cfg.runtime.stats_interval_s,
        shutdown_timeout_s=cfg.runtime.shutdown_timeout_s,
        frames_log=frames_log,
        stop=stop,
    )


class LaneLog:
    """A frames log shared by lanes (or one lane's): each JSON line the runtime writes gets the lane's
    name as its first key, and a lock keeps lines from several lanes' threads whole."""

    def __init__(self, out: IO[str], lane: str, lock: threading.Lock | None = None) -> None:
        self._out = out
        self._prefix = '{"lane": ' + json.dumps(lane) + ", "
        self._lock = lock or threading.Lock()

    def write(self, text: str) -> int:
        # The runtime writes one record per call: "{...}\n".
        line = self._prefix + text[1:] if text.startswith("{") and not text.startswith("{}") else text
        with self._lock:
            return self._out.write(line)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()


def _with_live(outputs: MakeOutputs, http: LaneHttp) -> MakeOutputs:
    """The live view takes the frames drawn for a window or recording; without those it draws the
    newest one itself, only when someone watches (the runtime then draws nothing)."""

    def make(props: SourceProperties) -> list[FrameOutput]:
        outs = list(outputs(props))
        return [*outs, http.view] if outs else []

    return make


def run(cfg: Config, open_source: OpenSource, options: RunOptions, stop: threading.Event) -> dict[str, Any]:
    """Build a lane, run it until its source ends or ``stop`` is set, release everything; the summary."""
    with contextlib.ExitStack() as stack:
        # Up before the models load: /healthz answers and /readyz says why it is not ready yet.
        http = stack.enter_context(LaneHttp(cfg.http, cfg.events.token, cfg.lane.name)) if cfg.http.bind else None
        embedder, catalog = load_recognition(cfg, options.catalog, options.photos)
        sinks = SinkSet([*make_sinks(cfg.events.sinks, cfg.events), *([http.view] if http else [])])
        stack.callback(sinks.close)
        frames_log = None
        if options.frames_log is not None:
            log_file = stack.enter_context(open(options.frames_log, "w", buffering=1 << 16))
            frames_log = cast(IO[str], LaneLog(log_file, cfg.lane.name))
        outputs = window_and_recorder(cfg, options.record, options.display)
        if http is not None:
            outputs = _with_live(outputs, http)
        rt = build_runtime(
            cfg,
            open_source,
            sinks,
            embedder=embedder,
            catalog=catalog,
            outputs=outputs,
            frames_log=frames_log,
            stop=stop,
        )
        if http is not None:
            draw = rt.overlay or Overlay(cfg.overlay, rt.pipeline.zones.zones)
            identity = lane_identity(rt.pipeline.segmenter, embedder, catalog)
            http.attach(rt, sinks, identity, draw=draw, baskets=rt.pipeline.baskets)
            rt.observer = http
        stack.callback(rt.source.close)
        summary = rt.run()
    return summary
