"""Zones: table-driven parsing and assignment, property test against OpenCV's pointPolygonTest."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import load_config
from stream.events import EventFactory, validate
from stream.outputs.overlay import Overlay
from stream.stages.zones import (
    WHOLE_FRAME,
    Zone,
    ZoneFilter,
    assign,
    contains,
    parse_polygon,
    zones_from_config,
)
from stream.types import Detections, Frame, FrameResult, StageTimes

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
L_SHAPE = np.array([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]], np.float64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,0 10,0 10,10", [[0, 0], [10, 0], [10, 10]]),
        ("  1.5,2 3,4   5,6 ", [[1.5, 2], [3, 4], [5, 6]]),
    ],
)
def test_parse_polygon(text: str, expected: list[list[float]]) -> None:
    assert parse_polygon(text).tolist() == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "at least 3"),
        ("0,0 1,1", "at least 3"),
        ("0,0 1;1 2,2", "x,y"),
        ("0,0 a,1 2,2", "x,y"),
    ],
)
def test_parse_polygon_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_polygon(text)


# polygon, points, expected inside
CASES = [
    ("no points", SQUARE, np.zeros((0, 2)), []),
    ("centre and outside", SQUARE, [[5, 5], [11, 5], [-1, -1]], [True, False, False]),
    ("edges and corners are inside", SQUARE, [[0, 5], [10, 10], [5, 0]], [True, True, True]),
    ("concave notch is outside", L_SHAPE, [[7, 7], [2, 7], [7, 2]], [False, True, True]),
    ("reversed winding", SQUARE[::-1].copy(), [[5, 5], [20, 5]], [True, False]),
]


@pytest.mark.parametrize(("name", "polygon", "points", "expected"), CASES, ids=[c[0] for c in CASES])
def test_contains(name: str, polygon: np.ndarray, points: list, expected: list[bool]) -> None:
    assert contains(polygon, np.asarray(points, np.float64)).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=3, max_size=8),
    st.lists(st.tuples(st.floats(-5, 55), st.floats(-5, 55)), min_size=1, max_size=20),
)
def test_contains_matches_opencv(vertices: list[tuple[int, int]], points: list[tuple[float, float]]) -> None:
    poly = np.asarray(vertices, np.float64)
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    if abs(cv2.contourArea(contour)) < 1.0:
        return  # degenerate polygons: both answers are conventions
    ours = contains(poly, np.asarray(points))
    for (x, y), got in zip(points, ours, strict=True):
        d = cv2.pointPolygonTest(contour, (float(x), float(y)), True)
        if abs(d) > 1e-3:  # away from the outline, where both must agree
            assert got == (d > 0), (x, y, d)


def test_assign_first_zone_wins_and_none_is_minus_one() -> None:
    zones = (Zone("a", SQUARE), Zone("b", SQUARE + 5))
    assert assign(zones, np.array([[2, 2], [7, 7], [14, 14], [30, 30]])).tolist() == [0, 0, 1, -1]
    assert assign((), np.array([[1, 1], [99, 99]])).tolist() == [0, 0]


def _det(centroids: list[tuple[float, float]]) -> Detections:
    n = len(centroids)
    inst = np.zeros((4, 4), np.int32)
    for i in range(min(n, 4)):
        inst[i, i] = i + 1
    c = np.asarray(centroids, np.float32).reshape(-1, 2)
    return Detections(
        xyxy=np.concatenate([c - 1, c + 1], 1).astype(np.float32),
        area=np.ones(n, np.float32),
        centroid=c,
        confidence=np.ones(n, np.float32),
        class_id=np.ones(n, np.int32),
        instance_map=inst,
    )


def test_filter_without_zones_keeps_everything() -> None:
    det = _det([(1, 1), (500, 500)])
    kept, names = ZoneFilter().apply(det)
    assert kept is det
    assert names == (WHOLE_FRAME, WHOLE_FRAME)


def test_filter_drops_items_outside_and_renumbers_the_map() -> None:
    det = _det([(50, 50), (5, 5), (8, 2)])
    kept, names = ZoneFilter((Zone("tray", SQUARE),)).apply(det)
    assert len(kept) == 2
    assert names == ("tray", "tray")
    assert kept.centroid.tolist() == [[5, 5], [8, 2]]
    assert kept.instance_map[0, 0] == 0 and kept.instance_map[1, 1] == 1 and kept.instance_map[2, 2] == 2


def test_filter_empty_detections() -> None:
    kept, names = ZoneFilter((Zone("tray", SQUARE),)).apply(Detections.empty((4, 4)))
    assert len(kept) == 0 and names == ()


def test_zones_from_config() -> None:
    zones = zones_from_config([{"name": "belt", "polygon": "0,0 10,0 10,10"}, {"polygon": [[0, 0], [1, 0], [1, 1]]}])
    assert [z.name for z in zones] == ["belt", "zone2"]
    with pytest.raises(ValueError, match="unique"):
        zones_from_config([{"name": "a", "polygon": "0,0 1,0 1,1"}, {"name": "a", "polygon": "0,0 1,0 1,1"}])
    with pytest.raises(ValueError, match="name, polygon"):
        zones_from_config(["0,0 1,0 1,1"])
    with pytest.raises(ValueError, match="at least 3"):
        Zone("x", np.zeros((2, 2)))


def test_item_events_carry_their_zone_and_match_the_schema() -> None:
    frame = Frame(
        image=np.zeros((10, 10, 3), np.uint8),
        index=3,
        t_capture=time.monotonic(),
        utc_capture=time.time(),
        source="test",
    )
    events = EventFactory("run", "test")
    default = events.item("item.entered", frame, 1, [0, 0, 5, 5], None)
    tray = events.item("item.left", frame, 1, [0, 0, 5, 5], None, zone="tray")
    assert default["zone"] == WHOLE_FRAME
    assert tray["zone"] == "tray"
    validate(default)
    validate(tray)
    with pytest.raises(Exception, match="zone"):
        validate({k: v for k, v in tray.items() if k != "zone"})


def test_overlay_draws_the_zones() -> None:
    frame = Frame(image=np.zeros((40, 40, 3), np.uint8), index=0, t_capture=0.0, utc_capture=0.0, source="t")
    result = FrameResult(frame, Detections.empty((4, 4)), (), (), StageTimes(0.0, 0.0, 0.0, 0.0))
    cfg = load_config().overlay
    plain = Overlay(cfg).draw(result)
    zoned = Overlay(cfg, (Zone("tray", np.array([[5, 5], [35, 5], [35, 35], [5, 35]], np.float64)),)).draw(result)
    assert not plain.any()
    assert zoned[5, 20].any() and zoned[35, 20].any()  # the outline
    assert not zoned[20, 20].any()  # not filled
