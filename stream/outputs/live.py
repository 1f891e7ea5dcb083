"""The live view's state: the newest annotated frame, the current items and the last events.

``LiveView`` takes frames two ways: as a ``stream.runtime.FrameOutput`` (``write(image, result)`` on
the output thread: the overlay the runtime drew once for a window or recording too) or, when nothing
else needs a drawn frame, as the runtime's observer (``observe(result)`` on the update thread: the
result only, drawn here with ``draw`` when someone looks). It is also an event sink (``publish``, on
the update thread beside the real sinks). Each of these only swaps in a reference or appends to a
bounded deque: O(1), no copying, drawing or encoding, so the frame loop pays nothing for the view.
The HTTP threads do the work, on demand: ``jpeg()`` draws (if needed) and encodes the newest frame at
most once per ``1 / live_fps`` however many viewers poll it (a shared cache); nothing is drawn or
encoded when nobody looks.

Read from any thread: every method returns a snapshot; nothing returned is shared with the loop.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stream.config import HttpConfig
from stream.types import FrameResult

_BASKET_DELTA = {"basket.item_added": 1, "basket.item_removed": -1}


@dataclass(frozen=True)
class Picture:
    """One encoded live frame: JPEG bytes and the index of the frame they show."""

    jpeg: bytes
    frame_index: int


class LiveView:
    """See the module docstring. ``clock`` is ``time.monotonic`` (injectable for tests)."""

    def __init__(
        self, cfg: HttpConfig, draw: Callable[[FrameResult], np.ndarray] | None = None, clock: Any = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.draw = draw  # the overlay for observed results (set by whoever wires the view)
        self._clock = clock
        self._latest: tuple[np.ndarray | None, FrameResult] | None = None
        self._drawn_by_runtime = False
        self._last_write: float | None = None
        self.frames_written = 0
        self._lock = threading.Lock()  # events, counts and source state (publish vs HTTP readers)
        self._events: deque[dict[str, Any]] = deque(maxlen=max(cfg.last_events, 1))
        self._by_type: Counter[str] = Counter()
        self._source_online: bool | None = None  # None: the source reports no status (a file)
        self._reconnects = 0
        self._basket_items = 0  # items on the open basket's receipt (0 when none is open)
        self.published = 0
        self._encode_lock = threading.Lock()  # one encoder at a time; the others reuse its result
        self._picture: Picture | None = None
        self._encoded_slot = -1
        self.encoded = 0
        self.closed = False

    # -- the loop's side (must stay O(1)) -----------------------------------------------------------
    def write(self, image: np.ndarray, result: FrameResult) -> bool:
        """Keep a reference to the newest drawn frame (never modified: the runtime draws a new one)."""
        self._drawn_by_runtime = True  # from now on observe() defers to the drawn frames
        self._latest = (image, result)  # one reference swap: atomic under the GIL
        self._last_write = self._clock()
        self.frames_written += 1
        return True

    def observe(self, result: FrameResult) -> None:
        """Keep a reference to the newest processed frame, drawn only when a viewer asks for it
        (ignored once ``write`` delivers drawn frames: those are the ones to show)."""
        if self._drawn_by_runtime:
            return
        self._latest = (None, result)
        self._last_write = self._clock()
        self.frames_written += 1

    def publish(self, event: dict[str, Any]) -> None:
        """Count and remember one event (the sink seam); source.* events set the source state."""
        kind = str(event.get("type", ""))
        with self._lock:
            self.published += 1
            self._by_type[kind] += 1
            if self.cfg.last_events:
                self._events.append(event)
            if kind == "source.online":
                self._source_online = True
                detail = event.get("detail") or {}
                self._reconnects = int(detail.get("reconnects", self._reconnects))
            elif kind == "source.offline":
                self._source_online = False
            elif kind in _BASKET_DELTA:
                self._basket_items = max(0, self._basket_items + _BASKET_DELTA[kind])
            elif kind in ("basket.opened", "basket.closed"):
                self._basket_items = 0

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "frames": self.frames_written, "encoded": self.encoded}

    def close(self) -> None:
        """Frames stop; the last picture and events stay readable until the server closes."""
        self.closed = True

    # -- the readers' side (HTTP threads) -------------------------------------------------------------
    def seconds_since_frame(self) -> float | None:
        """Seconds since the last frame arrived, or None before the first."""
        last = self._last_write
        return None if last is None else max(0.0, self._clock() - last)

    def source(self) -> dict[str, Any]:
        """{"online": True/False/None (None: no status reported), "reconnects": n}."""
        with self._lock:
            return {"online": self._source_online, "reconnects": self._reconnects}

    def basket_items(self) -> int:
        """Items on the open basket's receipt (``basket.item_added`` minus ``item_removed``)."""
        with self._lock:
            return self._basket_items

    def events_by_type(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_type)

    def last_events(self) -> list[dict[str, Any]]:
        """The last ``last_events`` events, newest first."""
        if not self.cfg.last_events:
            return []
        with self._lock:
            return list(reversed(self._events))

    def jpeg(self) -> Picture | None:
        """The newest frame as JPEG, re-encoded at most once per ``1 / live_fps`` time slot (None before
        the first frame)."""
        latest = self._latest
        if latest is None:
            return None
        with self._encode_lock:
            pic = self._picture
            index = latest[1].frame.index
            # One encode per 1/live_fps time slot at most: a viewer polling at live_fps gets a new
            # picture on every poll, and any number of viewers never raise the encode rate.
            slot = int(self._clock() * self.cfg.live_fps)
            if pic is not None and (pic.frame_index == index or slot == self._encoded_slot):
                return pic
            image = latest[0]
            if image is None:
                if self.draw is None:
                    raise RuntimeError("LiveView: observe() needs a draw callable to show frames")
                image = self.draw(latest[1])
            self._picture = Picture(self._encode(image), index)
            self._encoded_slot = slot
            self.encoded += 1
            return self._picture

    def _encode(self, image: np.ndarray) -> bytes:
        h, w = image.shape[:2]
        if w > self.cfg.live_max_width:
            size = (self.cfg.live_max_width, max(1, round(h * self.cfg.live_max_width / w)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:  # OpenCV only fails here on an empty image, which the runtime never draws
            raise ValueError(f"LiveView: cannot encode a frame of shape {image.shape} as JPEG")
        return buf.tobytes()

    def items(self) -> list[dict[str, Any]]:
        """The current (confirmed) items of the newest frame: id, box, label, score, top-k."""
        latest = self._latest
        if latest is None:
            return []
        out = []
        for view in latest[1].tracks:
            label = view.label
            out.append(
                {
                    "track_id": int(view.track_id),
                    "bbox": [round(float(v), 1) for v in view.xyxy],
                    "label": None if label is None else label.product,
                    "score": None if label is None else round(float(label.score), 4),
                    "unknown": None if label is None else bool(label.unknown),
                    "topk": [] if label is None else [[p, round(float(s), 4)] for p, s in label.topk],
                }
            )
        return out

    def frame_info(self) -> dict[str, Any] | None:
        """Index, capture time (UTC seconds) and size of the newest frame, or None before the first."""
        latest = self._latest
        if latest is None:
            return None
        frame = latest[1].frame
        return {
            "index": int(frame.index),
            "capture_utc": float(frame.utc_capture),
            "width": frame.size[0],
            "height": frame.size[1],
        }
