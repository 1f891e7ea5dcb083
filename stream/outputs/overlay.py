"""The operator's view: each item outlined and lightly tinted in its track's colour, a label chip per
item (id, product, score) that never covers another chip, and a status line (FPS, latency, drops).

Drawn once per output frame by the runtime and shared by every output (window, recorder, live view),
and only when one of them consumes it. The tint and outlines are computed inside each item's box, not
over the whole frame, so a 1080p frame with a few items costs about what a small one does; with
``max_width`` a wide frame is first scaled down and drawn at that (display) width.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stream.config import OverlayConfig
from stream.stages.zones import Zone
from stream.types import FrameResult, Label

_GOLDEN = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SCALE = 0.5
_PAD = 3
_ZONE_COLOUR = (255, 255, 0)  # cyan (BGR): zones are drawn thin, under the items

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour for a track id (golden-ratio hue walk)."""
    hue = int(((track_id * _GOLDEN) % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def label_text(track_id: int, label: Label | None) -> str:
    name = "..." if label is None else f"{label.product} {label.score:.2f}"
    return f"#{track_id} {name}".encode("ascii", "replace").decode()


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_chip(size: tuple[int, int], box: Rect, frame: tuple[int, int], taken: list[Rect]) -> Rect:
    """Where a chip of ``size`` (w, h) goes for ``box``: just above it, else inside its top edge, then
    stepped down until it covers no chip in ``taken``; always inside the frame (w, h)."""
    w, h = size
    fw, fh = frame
    x = min(max(0, box[0]), max(0, fw - w))
    y = box[1] - h if box[1] - h >= 0 else max(0, box[1])
    for _ in range(64):
        rect = (x, y, x + w, y + h)
        if not any(_overlaps(rect, t) for t in taken):
            return rect
        y = y + h if y + 2 * h <= fh else 0
        if y == 0:
            x = min(x + w // 2, max(0, fw - w))
    return (x, y, x + w, y + h)


class Overlay:
    """Draws one FrameResult onto a copy of its frame."""

    def __init__(self, cfg: OverlayConfig, zones: Sequence[Zone] = ()) -> None:
        self.cfg = cfg
        self.zones = tuple(zones)

    def draw(self, result: FrameResult, status: str = "", max_width: int | None = None) -> np.ndarray:
        """The annotated BGR image (a new array); ``status`` is a line for the top-left corner.
        ``max_width``: a wider frame is scaled down to it first and everything drawn at that size
        (a live view or a small window need no more)."""
        src = result.frame.image
        f = 1.0
        if max_width is not None and src.shape[1] > max_width:
            f = max_width / src.shape[1]
            image = cv2.resize(src, (max_width, max(1, round(src.shape[0] * f))), interpolation=cv2.INTER_AREA)
        else:
            image = src.copy()
        h, w = image.shape[:2]
        inst = result.detections.instance_map
        views = [v for v in result.tracks if v.detection_index >= 0]
        if views and inst.size > 1:
            self._tint_and_outline(image, inst, views)
        for zone in self.zones:  # counting zones: items outside them are not reported
            pts = np.round(np.asarray(zone.polygon) * f).astype(np.int32)
            cv2.polylines(image, [pts], True, _ZONE_COLOUR, 1, cv2.LINE_AA)
            x, y = int(pts[:, 0].min()), int(pts[:, 1].min())
            cv2.putText(image, zone.name, (x + _PAD, y + 4 * _PAD), _FONT, _SCALE, _ZONE_COLOUR, 1, cv2.LINE_AA)
        taken: list[Rect] = []
        if status and self.cfg.show_fps:
            (tw, th), base = cv2.getTextSize(status, _FONT, _SCALE, 1)
            rect = (0, 0, tw + 2 * _PAD + 8, th + base + 2 * _PAD + 4)
            self._chip(image, status, rect, (0, 0, 0), (255, 255, 255))
            taken.append(rect)
        for view in result.tracks:
            colour = track_colour(view.track_id)
            x1, y1, x2, y2 = (int(round(v * f)) for v in view.xyxy)
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, 1, cv2.LINE_AA)
            text = label_text(view.track_id, view.label)
            (tw, th), base = cv2.getTextSize(text, _FONT, _SCALE, 1)
            rect = place_chip((tw + 2 * _PAD, th + base + 2 * _PAD), (x1, y1, x2, y2), (w, h), taken)
            taken.append(rect)
            self._chip(image, text, rect, colour, (0, 0, 0))
        return image

    def _tint_and_outline(self, image: np.ndarray, inst: np.ndarray, views: list) -> None:
        """Tint (``mask_alpha``) and outline each view's item, working inside its box only. The mask
        is upscaled exactly as a nearest-neighbour resize of the whole map would be (OpenCV's rule:
        destination pixel x reads source pixel floor(x * src / dst))."""
        h, w = image.shape[:2]
        ih, iw = inst.shape
        sx, sy = w / iw, h / ih
        scale = np.array([sx, sy], np.float32)
        items = []  # (view, label, r0, r1, c0, c1): the item's box in map pixels
        for view in views:
            label = view.detection_index + 1
            rows, cols = np.nonzero(inst == label)
            if len(rows):
                items.append((view, label, int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1))
        for view, label, r0, r1, c0, c1 in items if self.cfg.mask_alpha > 0 else ():
            # the destination pixels whose nearest source pixel lies in [c0, c1) x [r0, r1)
            x0, x1 = int(np.ceil(c0 * sx)), min(w, int(np.ceil(c1 * sx)))
            y0, y1 = int(np.ceil(r0 * sy)), min(h, int(np.ceil(r1 * sy)))
            xs = np.minimum(np.floor(np.arange(x0, x1) * (iw / w)).astype(np.int64), iw - 1)
            ys = np.minimum(np.floor(np.arange(y0, y1) * (ih / h)).astype(np.int64), ih - 1)
            mask = (inst[ys[:, None], xs[None, :]] == label).astype(np.uint8)
            roi = image[y0:y1, x0:x1]
            tint = np.empty_like(roi)
            tint[:] = track_colour(view.track_id)
            blend = cv2.addWeighted(roi, 1 - self.cfg.mask_alpha, tint, self.cfg.mask_alpha, 0)
            cv2.copyTo(blend, mask, roi)
        for view, label, r0, r1, c0, c1 in items:  # outlines after every tint (one may cross another item)
            sub = np.ascontiguousarray((inst[r0:r1, c0:c1] == label).astype(np.uint8))
            contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(c0, r0))
            pts = [np.round((c.reshape(-1, 2) + 0.5) * scale).astype(np.int32) for c in contours]
            cv2.polylines(image, pts, True, track_colour(view.track_id), 2, cv2.LINE_AA)

    @staticmethod
    def _chip(image: np.ndarray, text: str, rect: Rect, bg: tuple[int, int, int], fg: tuple[int, int, int]) -> None:
        x1, y1, x2, y2 = rect
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), bg, -1)
        (_, th), _ = cv2.getTextSize(text, _FONT, _SCALE, 1)
        cv2.putText(image, text, (x1 + _PAD, y1 + _PAD + th), _FONT, _SCALE, fg, 1, cv2.LINE_AA)
