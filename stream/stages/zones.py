"""Counting zones: polygons in source pixels; an item counts in the first zone holding its centroid.

Items whose centroid lies outside every zone are dropped before tracking, so they are never reported.
No zones means one zone, the whole frame (``WHOLE_FRAME``). Points on a polygon's edge are inside.
Pure numpy: the point-in-polygon test is the even-odd rule, vectorised over points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.types import Detections

WHOLE_FRAME = "frame"
MIN_VERTICES = 3


@dataclass(frozen=True)
class Zone:
    """A named counting polygon. polygon: float64 [k, 2] (x, y) source pixels, k >= 3, either winding."""

    name: str
    polygon: np.ndarray

    def __post_init__(self) -> None:
        p = self.polygon
        if not isinstance(p, np.ndarray) or p.ndim != 2 or p.shape[1] != 2 or len(p) < MIN_VERTICES:
            found = p.shape if isinstance(p, np.ndarray) else type(p).__name__
            raise ValueError(f"zone {self.name!r}: expected at least {MIN_VERTICES} (x, y) points, found {found}")
        if not np.isfinite(p).all():
            raise ValueError(f"zone {self.name!r}: polygon points must be finite numbers")
        if not self.name:
            raise ValueError("zone: the name must not be empty")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "polygon": self.polygon.tolist()}


def parse_polygon(text: str) -> np.ndarray:
    """'x1,y1 x2,y2 x3,y3 ...' (source pixels) -> float64 [k, 2]."""
    points = []
    for token in text.split():
        xs, sep, ys = token.partition(",")
        try:
            if not sep:
                raise ValueError
            points.append((float(xs), float(ys)))
        except ValueError:
            raise ValueError(
                f"zone: expected points 'x,y' separated by spaces (e.g. \"0,0 640,0 640,480\"), found {token!r}"
            ) from None
    if len(points) < MIN_VERTICES:
        raise ValueError(f"zone: a polygon needs at least {MIN_VERTICES} points, found {len(points)} in {text!r}")
    return np.asarray(points, np.float64)


def zones_from_config(items: Sequence[Any]) -> tuple[Zone, ...]:
    """Zones from a list of {"name": str, "polygon": [[x, y], ...] or "x,y x,y ..."} (config or profile)."""
    out: list[Zone] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "polygon" not in item:
            raise ValueError(f"zones[{i}]: expected {{name, polygon}}, found {item!r}")
        poly = item["polygon"]
        arr = parse_polygon(poly) if isinstance(poly, str) else np.asarray(poly, np.float64)
        out.append(Zone(str(item.get("name") or f"zone{i + 1}"), arr))
    names = [z.name for z in out]
    if len(set(names)) != len(names):
        raise ValueError(f"zones: names must be unique, found {names}")
    return tuple(out)


def contains(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """bool [n]: which (x, y) ``points`` [n, 2] lie inside or on ``polygon`` [k, 2] (even-odd rule)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, bool)
    x, y = pts[:, 0:1], pts[:, 1:2]
    a = polygon
    b = np.roll(polygon, -1, axis=0)
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    crosses = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = ax + (y - ay) * (bx - ax) / (by - ay)
    inside = (crosses & (x < x_at)).sum(axis=1) % 2 == 1
    # On an edge: collinear with it and within its bounding box.
    cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
    scale = np.hypot(bx - ax, by - ay)
    on_edge = (
        (np.abs(cross) <= 1e-9 * np.maximum(scale, 1.0))
        & (x >= np.minimum(ax, bx) - 1e-9)
        & (x <= np.maximum(ax, bx) + 1e-9)
        & (y >= np.minimum(ay, by) - 1e-9)
        & (y <= np.maximum(ay, by) + 1e-9)
    ).any(axis=1)
    return np.asarray(inside | on_edge)


def assign(zones: Sequence[Zone], points: np.ndarray) -> np.ndarray:
    """int64 [n]: index of the first zone holding each point, -1 for none. No zones: all 0."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not zones:
        return np.zeros(len(pts), np.int64)
    out = np.full(len(pts), -1, np.int64)
    for i, zone in enumerate(zones):
        hit = (out < 0) & contains(zone.polygon, pts)
        out[hit] = i
    return out


class ZoneFilter:
    """Detections -> (the detections inside some zone, the zone name of each kept row)."""

    def __init__(self, zones: Sequence[Zone] = ()) -> None:
        self._zones = tuple(zones)
        self._names = tuple(z.name for z in self._zones) or (WHOLE_FRAME,)

    @property
    def zones(self) -> tuple[Zone, ...]:
        return self._zones

    def apply(self, det: Detections) -> tuple[Detections, tuple[str, ...]]:
        if not self._zones:
            return det, (WHOLE_FRAME,) * len(det)
        idx = assign(self._zones, det.centroid)
        kept = det if bool((idx >= 0).all()) else det.select(idx >= 0)
        return kept, tuple(self._names[i] for i in idx[idx >= 0])
