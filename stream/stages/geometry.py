"""Box geometry and assignment, defined once: areas, overlaps, IoU and gated minimum-cost matching.

Boxes are ``xyxy`` in pixels (x2/y2 exclusive); results are float64. Assignment is
``scipy.optimize.linear_sum_assignment`` (a well-kept Jonker-Volgenant solver) behind the gates the
tracker needs.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# Cost given to pairs that fail a gate. Finite and far above any real cost (those are in [0, 2]), so
# the solver prefers any number of feasible pairs over one infeasible pair; infeasible pairs it still
# returns are dropped after solving.
INFEASIBLE = 1e6

_NO_PAIRS = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def box_area(xyxy: np.ndarray) -> np.ndarray:
    """Areas of [N, 4] xyxy boxes -> float64 [N]; 0 for an empty box."""
    xyxy = np.asarray(xyxy, np.float64)
    return np.prod(np.maximum(xyxy[:, 2:] - xyxy[:, :2], 0.0), axis=1)


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersection areas [A, B] of xyxy boxes, and the areas of ``a`` [A] and ``b`` [B]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.maximum(rb - lt, 0.0), axis=2)
    return inter, box_area(a), box_area(b)


def box_cover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of each box in [A, 4] (xyxy) inside each box in [B, 4] -> float64 [A, B]."""
    inter, area_a, _ = _overlap(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area_a[:, None] > 0, inter / area_a[:, None], 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [A, 4] and [B, 4] xyxy boxes -> float64 [A, B]; 0 where the union is empty."""
    inter, area_a, area_b = _overlap(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching of a finite [n, m] cost matrix (rectangular allowed).

    Returns (rows, cols), int64, sorted by row, with min(n, m) pairs. Non-finite costs are refused:
    give forbidden pairs ``INFEASIBLE`` instead.
    """
    c = np.asarray(cost, np.float64)
    if c.ndim != 2:
        raise ValueError(f"linear_assignment: expected a 2-D cost matrix, found shape {c.shape}")
    if c.size and not np.isfinite(c).all():
        raise ValueError("linear_assignment: costs must be finite; give forbidden pairs a large cost")
    if c.size == 0:
        return _NO_PAIRS
    rows, cols = linear_sum_assignment(c)
    return rows.astype(np.int64), cols.astype(np.int64)


def gated_match(iou: np.ndarray, cost: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the minimum-cost matching among pairs with ``iou >= min_iou``."""
    if iou.size == 0:
        return _NO_PAIRS
    ok = iou >= min_iou
    rows, cols = linear_assignment(np.where(ok, cost, INFEASIBLE))
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


def distance_match(a: np.ndarray, b: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``a``, rows of ``b``) matched by centre distance in units of the larger box diagonal,
    among pairs closer than ``gate`` whose areas differ by less than 3x."""
    if len(a) == 0 or len(b) == 0:
        return _NO_PAIRS
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    da = np.hypot(*(a[:, 2:] - a[:, :2]).T)
    db = np.hypot(*(b[:, 2:] - b[:, :2]).T)
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / np.maximum(
        np.maximum(da[:, None], db[None, :]), 1e-6
    )
    ratio = (da[:, None] / np.maximum(db[None, :], 1e-6)) ** 2
    ok = (dist <= gate) & (ratio < 3.0) & (ratio > 1 / 3.0)
    rows, cols = linear_assignment(np.where(ok, dist, INFEASIBLE))
    keep = ok[rows, cols]
    return rows[keep], cols[keep]
