"""The operator's view: item masks tinted per track, boxes, ids, product names, FPS, latency, drops."""

from __future__ import annotations

import cv2
import numpy as np

from stream.config import OverlayConfig
from stream.types import FrameResult

_GOLDEN = 0.618033988749895


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour for a track id (golden-ratio hue walk)."""
    hue = int(((track_id * _GOLDEN) % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


class Overlay:
    """Draws one FrameResult onto a copy of its frame."""

    def __init__(self, cfg: OverlayConfig) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        """Nothing is kept between frames."""

    def draw(self, result: FrameResult, status: str = "") -> np.ndarray:
        """Return the annotated BGR image; ``status`` is a line for the top-left corner."""
        image = result.frame.image.copy()
        h, w = image.shape[:2]
        inst = result.detections.instance_map
        if result.tracks and inst.size > 1 and self.cfg.mask_alpha > 0:
            lut = np.zeros((len(result.detections) + 1, 3), np.uint8)
            for view in result.tracks:
                if view.detection_index >= 0:
                    lut[view.detection_index + 1] = track_colour(view.track_id)
            small = lut[inst]
            if lut[1:].any():
                # Blend at full size, then copy only the painted pixels (cv2.copyTo with a mask is
                # far cheaper than numpy boolean indexing over the frame).
                tint = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
                painted = cv2.resize(small.any(axis=2).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                blend = cv2.addWeighted(image, 1 - self.cfg.mask_alpha, tint, self.cfg.mask_alpha, 0)
                cv2.copyTo(blend, painted, image)
        for view in result.tracks:
            self._draw_track(image, view.track_id, view.xyxy, view.label)
        if status and self.cfg.show_fps:
            (tw, th), _ = cv2.getTextSize(status, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            cv2.rectangle(image, (0, 0), (tw + 16, th + 14), (0, 0, 0), -1)
            cv2.putText(image, status, (8, th + 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
        return image

    @staticmethod
    def _draw_track(image: np.ndarray, track_id: int, xyxy: tuple, label: object) -> None:
        colour = track_colour(track_id)
        x1, y1, x2, y2 = (int(round(v)) for v in xyxy)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        name = "..." if label is None else f"{label.product} {label.score:.2f}"  # type: ignore[attr-defined]
        _text(image, f"#{track_id} {name}", (x1 + 2, max(14, y1 - 6)), colour, scale=0.5)


def _text(image: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int],
          scale: float) -> None:
    # A dark outline keeps labels legible on any counter.
    text = text.encode("ascii", "replace").decode()
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
