"""The stages composed, with no threads: frame in, FrameResult (tracks, labels, events) out.

``detect`` (segment + boxes) and ``update`` (track + classify + item events) are separate so the
runtime can run them on two threads; ``process`` runs both in order (the one-thread baseline). The
item lifecycle lives here: ``item.entered`` when a track is first confirmed, ``item.classified``
when its label first settles or changes, ``item.left`` when a confirmed track is removed, carrying
the last label the item had (the classifier forgets a removed track in the same update, so the
pipeline keeps each item's label itself). With ``zones`` (``stream.stages.zones``), detections outside
every zone are dropped before tracking and each item event names the zone its item was last seen
in. With ``baskets`` (``stream.baskets``), each frame's item
events are followed by the basket events they cause, and ``finish`` closes the open basket.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from stream.baskets import Baskets
from stream.stages.protocols import BoxesLike, ClassifierLike, SegmenterLike, TrackerLike
from stream.stages.zones import WHOLE_FRAME, Zone, ZoneFilter
from stream.types import (
    CONFIRMED,
    REMOVED,
    Detections,
    Frame,
    FrameResult,
    Label,
    StageTimes,
    TrackView,
)


class ClassifierStage(ClassifierLike, Protocol):
    """The classifier as the pipeline drives it: where it embeds is chosen at ``start``."""

    def start(self, *, background: bool, fps: float | None = None) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class EventsLike(Protocol):
    def item(
        self,
        type: str,
        frame: Frame,
        track_id: int,
        bbox: Sequence[float],
        label: Label | None,
        *,
        zone: str = WHOLE_FRAME,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Detected:
    """What ``detect`` hands to ``update``."""

    frame: Frame
    detections: Detections
    segment_ms: float
    boxes_ms: float
    zones: tuple[str, ...] = ()  # the zone name of each detection row


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _bbox(xyxy: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in xyxy]


class Pipeline:
    def __init__(
        self,
        segmenter: SegmenterLike,
        boxes: BoxesLike,
        tracker: TrackerLike,
        classifier: ClassifierStage,
        events: EventsLike,
        *,
        baskets: Baskets | None = None,
        zones: Sequence[Zone] = (),
    ) -> None:
        self.segmenter = segmenter
        self.boxes = boxes
        self.tracker = tracker
        self.classifier = classifier
        self.events = events
        self.baskets = baskets
        self.zones = ZoneFilter(zones)
        self._entered: dict[int, list[float]] = {}  # confirmed track -> its last confirmed box
        self._labels: dict[int, Label | None] = {}  # confirmed track -> its last label
        self._zone: dict[int, str] = {}  # track -> the zone of its last matched detection
        self._size: tuple[int, int] | None = None
        self._last: Frame | None = None

    def detect(self, frame: Frame) -> Detected:
        t0 = time.perf_counter()
        if frame.analysis is not None:  # scaled by the decoder already: the segmenter only reads it
            segmap = replace(self.segmenter.segment(frame.analysis), source_size=frame.size)
        else:
            segmap = self.segmenter.segment(frame.image)
        t1 = time.perf_counter()
        detections, zones = self.zones.apply(self.boxes.extract(segmap))
        return Detected(frame, detections, (t1 - t0) * 1000.0, _ms(t1), zones)

    def update(self, detected: Detected) -> FrameResult:
        frame, dets = detected.frame, detected.detections
        events: list[dict] = []
        if self._size is not None and frame.size != self._size:
            events += self._leave_all()  # new geometry: every item so far has left the picture
            self.tracker.reset()
            self.classifier.reset()
        self._size = frame.size
        self._last = frame
        t0 = time.perf_counter()
        tracks = self.tracker.update(dets)
        t1 = time.perf_counter()
        changed = self.classifier.update(frame, dets, tracks)
        t2 = time.perf_counter()
        views = []
        for i, tid in enumerate(tracks.track_id.tolist()):
            state = int(tracks.state[i])
            box = _bbox(tracks.xyxy[i])
            if state == REMOVED:
                events += self._left(tid, frame)
                continue
            row = int(tracks.detection_index[i])
            if 0 <= row < len(detected.zones):
                self._zone[tid] = detected.zones[row]
            zone = self._zone.get(tid, WHOLE_FRAME)
            if state == CONFIRMED and tid not in self._entered:
                label = self.classifier.label(tid)
                events.append(self.events.item("item.entered", frame, tid, box, label, zone=zone))
            if state == CONFIRMED:
                self._entered[tid] = box
                self._labels[tid] = self.classifier.label(tid)
            if tid in changed:
                events.append(self.events.item("item.classified", frame, tid, box, changed[tid], zone=zone))
            if state == CONFIRMED:
                views.append(
                    TrackView(
                        tid,
                        (box[0], box[1], box[2], box[3]),
                        int(tracks.detection_index[i]),
                        self.classifier.label(tid),
                    )
                )
        if self.baskets is not None:
            events += self.baskets.update(events, frame.t_capture)
        times = StageTimes(
            segment=detected.segment_ms, boxes=detected.boxes_ms, track=(t1 - t0) * 1000.0, classify=(t2 - t1) * 1000.0
        )
        return FrameResult(frame, dets, tuple(views), tuple(events), times)

    def analysis_size(self) -> tuple[int, int] | None:
        """(width, height) the segmenter takes its input at, when it says (sources scale frames to
        it as they decode them); None: frames go to the segmenter at their own size."""
        size = getattr(self.segmenter, "input_size", None)
        if isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return size[1], size[0]
        return None

    def warm_up(self, size: tuple[int, int] = (640, 480)) -> None:
        """Run segment, boxes and track once on a blank frame so that JIT compilation and the first
        ONNX Runtime call happen before capture starts, not on the first frames of the run."""
        blank = np.full((size[1], size[0], 3), 127, np.uint8)
        self.tracker.update(self.zones.apply(self.boxes.extract(self.segmenter.segment(blank)))[0])
        self.tracker.reset()

    def start(self, *, background: bool, fps: float | None = None) -> None:
        """Before the first frame: ``background`` embeds crops on the classifier's own worker thread
        (never waiting for it); otherwise inline in ``update``, its budget clocked by frame index /
        ``fps`` when given (an offline file: the same events on every machine)."""
        self.classifier.start(background=background, fps=fps)

    def close(self) -> None:
        """Stop and join the classifier's worker (idempotent)."""
        self.classifier.close()

    def process(self, frame: Frame) -> FrameResult:
        return self.update(self.detect(frame))

    def _left(self, track_id: int, frame: Frame) -> list[dict]:
        box = self._entered.pop(track_id, None)
        label = self._labels.pop(track_id, None)
        zone = self._zone.pop(track_id, WHOLE_FRAME)
        if box is None:
            return []  # never confirmed: it never entered, so it does not leave
        return [self.events.item("item.left", frame, track_id, box, label, zone=zone)]

    def _leave_all(self) -> list[dict]:
        events: list[dict] = []
        if self._last is None:
            return events
        for tid in list(self._entered):
            events += self._left(tid, self._last)
        return events

    def finish(self) -> list[dict]:
        """``item.left`` for every item still present, then (with baskets) the basket events they
        cause and the open basket's ``basket.closed`` (reason ``end_of_stream``)."""
        events = self._leave_all()
        if self.baskets is not None:
            if self._last is not None:
                events += self.baskets.update(events, self._last.t_capture)
            events += self.baskets.close("end_of_stream")
        return events

    def reset(self) -> None:
        self._entered.clear()
        self._labels.clear()
        self._zone.clear()
        if self.baskets is not None:
            self.baskets.reset()
        self._size = None
        self._last = None
        self.tracker.reset()
        self.classifier.reset()
