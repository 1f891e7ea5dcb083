"""The overlay's per-item tint and outline equal the whole-frame drawing they replaced (differential,
against that reference), at frame sizes that are and are not multiples of the map; max_width draws
at display size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream.config import load_config
from stream.outputs.overlay import Overlay, track_colour
from stream.types import Detections, Frame, FrameResult, StageTimes, TrackView


def reference_tint_and_outline(image: np.ndarray, inst: np.ndarray, views: list, alpha: float) -> None:
    """The previous implementation: lookup table over the whole map, blended at full size."""
    h, w = image.shape[:2]
    sx, sy = w / inst.shape[1], h / inst.shape[0]
    if alpha > 0:
        lut = np.zeros((int(inst.max()) + 1, 3), np.uint8)
        for view in views:
            if view.detection_index + 1 < len(lut):
                lut[view.detection_index + 1] = track_colour(view.track_id)
        small = lut[inst]
        tint = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        painted = cv2.resize(small.any(axis=2).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        blend = cv2.addWeighted(image, 1 - alpha, tint, alpha, 0)
        cv2.copyTo(blend, painted, image)
    scale = np.array([sx, sy], np.float32)
    for view in views:
        mask = (inst == view.detection_index + 1).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        pts = [np.round((c.reshape(-1, 2) + 0.5) * scale).astype(np.int32) for c in contours]
        cv2.polylines(image, pts, True, track_colour(view.track_id), 2, cv2.LINE_AA)


def scene(size: tuple[int, int], map_shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
    inst = np.zeros(map_shape, np.int32)
    n = 5
    for k in range(n):
        y, x = rng.integers(0, map_shape[0] - 8), rng.integers(0, map_shape[1] - 8)
        inst[y : y + rng.integers(3, 8), x : x + rng.integers(3, 8)] = k + 1
    inst[0:2, 0:3] = 2  # an item in two pieces, one at the map's corner
    views = [TrackView(10 + k, (0.0, 0.0, 1.0, 1.0), k, None) for k in range(n) if k != 3]  # row 3: no track
    return image, inst, views


@pytest.mark.parametrize(
    ("size", "map_shape", "alpha"),
    [
        ((320, 240), (48, 64), 0.35),
        ((1920, 1080), (192, 256), 0.35),
        ((333, 201), (48, 64), 0.6),
        ((64, 48), (48, 64), 0.0),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_item_drawing_equals_the_whole_frame_reference(size, map_shape, alpha, seed) -> None:
    image, inst, views = scene(size, map_shape, seed)
    cfg = load_config(overrides={"overlay.mask_alpha": alpha}).overlay
    want = image.copy()
    reference_tint_and_outline(want, inst, views, alpha)
    got = image.copy()
    Overlay(cfg)._tint_and_outline(got, inst, views)
    assert np.array_equal(got, want)


def test_max_width_draws_at_display_size() -> None:
    image, inst, _ = scene((1920, 1080), (192, 256), 0)
    det = Detections(
        xyxy=np.array([[300, 200, 600, 500]], np.float32),
        area=np.ones(1, np.float32),
        centroid=np.zeros((1, 2), np.float32),
        confidence=np.ones(1, np.float32),
        class_id=np.ones(1, np.int32),
        instance_map=(inst == 1).astype(np.int32),
    )
    result = FrameResult(
        Frame(image, 0, 0.0, 0.0, "s"), det, (TrackView(7, (300, 200, 600, 500), 0, None),), (), StageTimes()
    )
    small = Overlay(load_config().overlay).draw(result, "status", max_width=960)
    assert small.shape == (540, 960, 3)
    assert Overlay(load_config().overlay).draw(result, max_width=4000).shape == image.shape
