"""The operator's view: each item outlined and lightly tinted in its track's colour, a label chip per
item (id, product, score) that never covers another chip, and a status line (FPS, latency, drops).

Drawn once per output frame by the runtime and shared by every output (window, recorder, live view).
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

    def draw(self, result: FrameResult, status: str = "") -> np.ndarray:
        """The annotated BGR image (a new array); ``status`` is a line for the top-left corner."""
        image = result.frame.image.copy()
        h, w = image.shape[:2]
        inst = result.detections.instance_map
        views = [v for v in result.tracks if v.detection_index >= 0]
        if views and inst.size > 1:
            self._tint_and_outline(image, inst, views)
        for zone in self.zones:  # counting zones: items outside them are not reported
            pts = np.round(zone.polygon).astype(np.int32)
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
            x1, y1, x2, y2 = (int(round(v)) for v in view.xyxy)
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, 1, cv2.LINE_AA)
            text = label_text(view.track_id, view.label)
            (tw, th), base = cv2.getTextSize(text, _FONT, _SCALE, 1)
            rect = place_chip((tw + 2 * _PAD, th + base + 2 * _PAD), (x1, y1, x2, y2), (w, h), taken)
            taken.append(rect)
            self._chip(image, text, rect, colour, (0, 0, 0))
        return image

    def _tint_and_outline(self, image: np.ndarray, inst: np.ndarray, views: list) -> None:
        h, w = image.shape[:2]
        sx, sy = w / inst.shape[1], h / inst.shape[0]
        if self.cfg.mask_alpha > 0:
            lut = np.zeros((int(inst.max()) + 1, 3), np.uint8)
            for view in views:
                if view.detection_index + 1 < len(lut):
                    lut[view.detection_index + 1] = track_colour(view.track_id)
            small = lut[inst]
            # Blend at full size, then copy only the painted pixels (cv2.copyTo with a mask is far
            # cheaper than numpy boolean indexing over the frame).
            tint = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
            painted = cv2.resize(small.any(axis=2).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
            blend = cv2.addWeighted(image, 1 - self.cfg.mask_alpha, tint, self.cfg.mask_alpha, 0)
            cv2.copyTo(blend, painted, image)
        scale = np.array([sx, sy], np.float32)
        for view in views:
            mask = (inst == view.detection_index + 1).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            pts = [np.round((c.reshape(-1, 2) + 0.5) * scale).astype(np.int32) for c in contours]
            cv2.polylines(image, pts, True, track_colour(view.track_id), 2, cv2.LINE_AA)

    @staticmethod
    def _chip(image: np.ndarray, text: str, rect: Rect, bg: tuple[int, int, int], fg: tuple[int, int, int]) -> None:
        x1, y1, x2, y2 = rect
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), bg, -1)
        (_, th), _ = cv2.getTextSize(text, _FONT, _SCALE, 1)
        cv2.putText(image, text, (x1 + _PAD, y1 + _PAD + th), _FONT, _SCALE, fg, 1, cv2.LINE_AA)
