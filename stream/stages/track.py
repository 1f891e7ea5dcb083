"""Track stage: ByteTrack-style multi-object tracking of item boxes.

Each update predicts every track one frame ahead (constant-velocity Kalman filter, ``stream.stages.kalman``)
and associates detections in two stages, as ByteTrack does:

1. confident detections (``conf >= high_threshold``) against every live track (tentative, confirmed
   and lost), gated by ``IoU >= match_iou``; the cost is ``1 - IoU``, or with embeddings and
   ``appearance_weight = w > 0``: ``(1 - w) * (1 - IoU) + w * (1 - cosine)``;
2. weak detections (``low_threshold <= conf < high_threshold``) against the tracks still unmatched and
   not lost, gated by ``IoU >= low_match_iou``, IoU only. A weak detection is usually a partly hidden
   item (a hand over it): it keeps that track alive but is not trusted to start one or to shape its
   appearance.

Unmatched confident detections with ``conf >= new_track_threshold`` start tentative tracks.

Lifecycle: a track is born tentative (its first frame counts as one hit) and is confirmed on its
``min_hits``-th matched frame; a tentative track missed once is removed (most are noise). A confirmed
track that is missed becomes lost; a lost track that is matched again is confirmed (same id); a lost
track is removed on its ``max_lost_frames + 1``-th consecutive missed frame, i.e. it stays lost for
``max_lost_frames`` frames (0: a confirmed track is removed on its first miss).

Re-acquisition at the anchor: an item that another item slides over shrinks from one side, so its
box's centre seems to move, and once hidden its track coasts away on that false velocity while the
item stays where it was. Each track therefore keeps an anchor, its last box seen at (nearly) full
size (at least ``ANCHOR_AREA`` of the largest box area the track has had). A track not reported
yet (tentative before this update) whose box overlaps a lost track's anchor (IoU >=
``REACQUIRE_IOU``) and lies inside it (at least ``REACQUIRE_INSIDE`` of its area: a part of the
item showing again, not the larger item that slid over it) is that item coming back: the lost track
takes the detection and the new track is dropped, so no second item is reported.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from stream.config import TrackConfig
from stream.stages import kalman
from stream.types import CONFIRMED, LOST, REMOVED, TENTATIVE, Detections, Tracks

log = logging.getLogger(__name__)

# Cost given to pairs that fail the IoU gate. Finite (the solver needs finite costs) and far above
# any real cost (those are in [0, 2]), so the solver prefers any number of feasible pairs over one
# infeasible pair; infeasible pairs it still returns are dropped after solving.
_INFEASIBLE = 1e6
# A match with at least this share of the track's largest area moves the anchor (module docstring).
ANCHOR_AREA = 0.85
# For a lost track to take over an unreported one: IoU of the latter's box with the lost track's
# anchor, and the share of that box lying inside the anchor.
REACQUIRE_IOU = 0.5
REACQUIRE_INSIDE = 0.8


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


@numba.njit(cache=True, nogil=True)
def _augment(cost: np.ndarray, i: int, u: np.ndarray, v: np.ndarray,
             row_of: np.ndarray) -> None:  # pragma: no cover - compiled
    """Add row i (1-based) to the matching along a shortest augmenting path; updates the potentials."""
    m = cost.shape[1]
    minv = np.full(m + 1, np.inf)
    used = np.zeros(m + 1, np.bool_)
    way = np.zeros(m + 1, np.int64)  # the column before j on the shortest path
    row_of[0] = i
    j0 = 0
    while row_of[j0] != 0:
        used[j0] = True
        i0 = row_of[j0]
        delta = np.inf
        j1 = 0
        for j in range(1, m + 1):
            if not used[j]:
                cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                if cur < minv[j]:
                    minv[j] = cur
                    way[j] = j0
                if minv[j] < delta:
                    delta = minv[j]
                    j1 = j
        for j in range(m + 1):
            if used[j]:
                u[row_of[j]] += delta
                v[j] -= delta
            else:
                minv[j] -= delta
        j0 = j1
    while j0 != 0:  # flip the augmenting path back to its start
        j1 = way[j0]
        row_of[j0] = row_of[j1]
        j0 = j1


@numba.njit(cache=True, nogil=True)
def _assign_rows(cost: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Minimum-cost assignment of every row of a finite [n, m] cost, n <= m.

    Shortest augmenting paths with row/column potentials (Jonker-Volgenant style, O(n^2 m)); the
    same problem scipy's linear_sum_assignment solves. Returns the column of each row.
    """
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    row_of = np.zeros(m + 1, np.int64)  # 1-based row assigned to column j (0 = free); j = 0 is a sentinel
    for i in range(1, n + 1):
        _augment(cost, i, u, v, row_of)
    col_of = np.full(n, -1, np.int64)
    for j in range(1, m + 1):
        if row_of[j] != 0:
            col_of[row_of[j] - 1] = j - 1
    return col_of


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching of a finite [n, m] cost matrix (rectangular allowed).

    Returns (rows, cols), int64, sorted by row, with min(n, m) pairs: the same contract as
    ``scipy.optimize.linear_sum_assignment`` for finite costs.
    """
    c = np.asarray(cost, np.float64)
    if c.ndim != 2:
        raise ValueError(f"linear_assignment: expected a 2-D cost matrix, found shape {c.shape}")
    if c.size and not np.isfinite(c).all():
        raise ValueError("linear_assignment: costs must be finite; give forbidden pairs a large cost")
    n, m = c.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n <= m:
        return np.arange(n, dtype=np.int64), _assign_rows(np.ascontiguousarray(c))
    cols = _assign_rows(np.ascontiguousarray(c.T))  # the row each column takes
    order = np.argsort(cols, kind="stable")
    return cols[order], order.astype(np.int64)


def _gated_match(iou: np.ndarray, cost: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(track rows, detection cols) of the best matching among pairs with IoU >= min_iou."""
    if iou.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ok = iou >= min_iou
    rows, cols = linear_assignment(np.where(ok, cost, _INFEASIBLE))
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


def _distance_match(pred: np.ndarray, boxes: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """(track rows, detection cols) matched by centre distance in units of the larger box diagonal,
    among pairs closer than ``gate`` whose areas differ by less than 3x."""
    if len(pred) == 0 or len(boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cp = (pred[:, :2] + pred[:, 2:]) / 2
    cd = (boxes[:, :2] + boxes[:, 2:]) / 2
    dp = np.hypot(*(pred[:, 2:] - pred[:, :2]).T)
    dd = np.hypot(*(boxes[:, 2:] - boxes[:, :2]).T)
    dist = np.linalg.norm(cp[:, None, :] - cd[None, :, :], axis=2) / np.maximum(
        np.maximum(dp[:, None], dd[None, :]), 1e-6)
    ratio = (dp[:, None] / np.maximum(dd[None, :], 1e-6)) ** 2
    ok = (dist <= gate) & (ratio < 3.0) & (ratio > 1 / 3.0)
    rows, cols = linear_assignment(np.where(ok, dist, _INFEASIBLE))
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


class Tracker:
    """Assigns stable ids to item boxes across frames. One instance per source; not thread-safe."""

    def __init__(self, cfg: TrackConfig) -> None:
        if cfg.low_threshold > cfg.high_threshold:
            raise ValueError(
                f"track: low_threshold ({cfg.low_threshold}) must not exceed high_threshold "
                f"({cfg.high_threshold}); lower low_threshold or raise high_threshold"
            )
        self.cfg = cfg
        self._next_id = 1  # per instance: two lanes in one process must not share ids
        self.reset()

    def reset(self) -> None:
        """Forget every track (new source or resolution change). Ids keep counting: never reused."""
        self._ids = np.zeros(0, np.int64)
        self._mean = np.zeros((0, 2 * kalman.NDIM))
        self._cov = np.zeros((0, 2 * kalman.NDIM, 2 * kalman.NDIM))
        self._state = np.zeros(0, np.int8)
        self._hits = np.zeros(0, np.int32)
        self._missed = np.zeros(0, np.int32)  # consecutive unmatched updates
        self._anchor = np.zeros((0, 4))  # last box seen at (nearly) full size, xyxy
        self._full = np.zeros(0)  # largest box area seen
        self._age = np.zeros(0, np.int32)
        self._score = np.zeros(0, np.float32)
        self._emb = np.zeros((0, 0), np.float32)  # smoothed, L2-normalised; width 0 until first seen
        self._has_emb = np.zeros(0, bool)

    def update(self, detections: Detections, embeddings: np.ndarray | None = None) -> Tracks:
        """Advance one frame. Returns every live track, plus those removed now (state REMOVED, once)."""
        cfg = self.cfg
        use_emb = embeddings is not None and cfg.appearance_weight > 0
        if embeddings is not None:
            self._check_embeddings(detections, embeddings)
        boxes = detections.xyxy
        conf = detections.confidence

        self._predict()
        unreported = self._state == TENTATIVE  # may be taken over by a lost track this update
        pred_xyxy = kalman.cxcywh_to_xyxy(self._mean[:, :4])
        det_idx = np.full(len(self._ids), -1, np.int64)
        high = np.flatnonzero(conf >= cfg.high_threshold)
        low = np.flatnonzero((conf >= cfg.low_threshold) & (conf < cfg.high_threshold))

        # Stage 1: confident detections against every live track, lost ones included.
        iou = box_iou(pred_xyxy, boxes[high])
        cost = 1.0 - iou
        if use_emb and self._has_emb.any():
            assert embeddings is not None
            cosine = self._emb @ embeddings[high].T.astype(np.float32)
            mixed = (1 - cfg.appearance_weight) * cost + cfg.appearance_weight * (1.0 - cosine)
            # A track without an embedding yet (born in a frame without embeddings) uses IoU only.
            cost = np.where(self._has_emb[:, None], mixed, cost)
        t1, d1 = _gated_match(iou, cost, cfg.match_iou)
        det_idx[t1] = high[d1]

        # Stage 2: weak detections keep unmatched, not-lost tracks alive.
        rest = np.flatnonzero((det_idx < 0) & (self._state != LOST))
        iou = box_iou(pred_xyxy[rest], boxes[low])
        t2, d2 = _gated_match(iou, 1.0 - iou, cfg.low_match_iou)
        det_idx[rest[t2]] = low[d2]

        # Stage 3: fast motion (an item put down or swept off quickly) can leave no overlap with the
        # constant-velocity prediction; close, similar-sized confident detections still match.
        if cfg.distance_gate > 0:
            rest = np.flatnonzero(det_idx < 0)
            free = np.setdiff1d(high, det_idx[det_idx >= 0])
            t3, d3 = _distance_match(pred_xyxy[rest], boxes[free], cfg.distance_gate)
            det_idx[rest[t3]] = free[d3]

        self._correct(det_idx, boxes, conf)
        if use_emb and len(t1):
            assert embeddings is not None
            self._blend_embeddings(t1, embeddings[high[d1]])
        self._miss(det_idx < 0)

        used = np.zeros(len(detections), bool)
        used[det_idx[det_idx >= 0]] = True
        born = high[~used[high] & (conf[high] >= cfg.new_track_threshold)]
        self._birth(born, boxes, conf, embeddings if use_emb else None)
        det_idx = self._reacquire(np.concatenate([det_idx, born]), boxes,
                                  np.concatenate([unreported, np.ones(len(born), bool)]))

        out = Tracks(
            track_id=self._ids.copy(),
            xyxy=kalman.cxcywh_to_xyxy(self._mean[:, :4]),
            state=self._state.copy(),
            detection_index=det_idx,
            score=self._score.copy(),
            age=self._age.copy(),
        )
        self._drop(self._state == REMOVED)
        return out

    # -- steps of one update; each replaces the state arrays rather than writing into shared ones --

    def _predict(self) -> None:
        mean = self._mean.copy()
        # A lost track's size velocity would keep shrinking or growing a box nobody sees (ByteTrack
        # freezes it too); its position keeps coasting so a moving item can be picked up again.
        mean[self._state == LOST, 6:] = 0.0
        self._mean, self._cov = kalman.predict(mean, self._cov)
        self._age = self._age + 1

    def _correct(self, det_idx: np.ndarray, boxes: np.ndarray, conf: np.ndarray) -> None:
        hit = np.flatnonzero(det_idx >= 0)
        rows = det_idx[hit]
        mean, cov = self._mean.copy(), self._cov.copy()
        mean[hit], cov[hit] = kalman.update(mean[hit], cov[hit], kalman.xyxy_to_cxcywh(boxes[rows]))
        self._mean, self._cov = mean, cov
        self._hits = self._hits.copy()
        self._hits[hit] += 1
        self._missed = self._missed.copy()
        self._missed[hit] = 0
        self._score = self._score.copy()
        self._score[hit] = conf[rows]
        state = self._state.copy()
        promote = (state[hit] == LOST) | (self._hits[hit] >= self.cfg.min_hits)
        state[hit[promote]] = CONFIRMED
        self._state = state
        self._move_anchors(hit, boxes[rows])

    def _move_anchors(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        area = box_area(boxes)
        full_area = self._full.copy()
        full_area[rows] = np.maximum(full_area[rows], area)
        anchor = self._anchor.copy()
        full = area >= ANCHOR_AREA * full_area[rows]
        anchor[rows[full]] = boxes[full]
        self._anchor, self._full = anchor, full_area

    def _reacquire(self, det_idx: np.ndarray, boxes: np.ndarray, unreported: np.ndarray) -> np.ndarray:
        """Lost tracks take over unreported tracks that sit on their anchor (module docstring)."""
        tentative = np.flatnonzero(unreported & (det_idx >= 0) & (self._state != REMOVED))
        lost = np.flatnonzero(self._state == LOST)
        if len(tentative) == 0 or len(lost) == 0:
            return det_idx
        seen = boxes[det_idx[tentative]]
        iou = box_iou(seen, self._anchor[lost])
        iou[box_cover(seen, self._anchor[lost]) < REACQUIRE_INSIDE] = 0.0
        t, l_ = _gated_match(iou, 1.0 - iou, REACQUIRE_IOU)
        if len(t) == 0:
            return det_idx
        new, old = tentative[t], lost[l_]
        det_idx = det_idx.copy()
        det_idx[old], det_idx[new] = det_idx[new], -1
        mean, cov = self._mean.copy(), self._cov.copy()
        mean[old], cov[old] = kalman.initiate(kalman.xyxy_to_cxcywh(boxes[det_idx[old]]))
        self._mean, self._cov = mean, cov
        state, missed, hits = self._state.copy(), self._missed.copy(), self._hits.copy()
        state[old], state[new] = CONFIRMED, REMOVED
        missed[old] = 0
        hits[old] += 1
        self._state, self._missed, self._hits = state, missed, hits
        score = self._score.copy()
        score[old] = score[new]
        self._score = score
        return det_idx

    def _miss(self, missed: np.ndarray) -> None:
        state = self._state.copy()
        self._missed = self._missed + missed.astype(np.int32)
        state[missed & (state == TENTATIVE)] = REMOVED
        state[missed & (state == CONFIRMED)] = LOST
        state[missed & (state == LOST) & (self._missed > self.cfg.max_lost_frames)] = REMOVED
        self._state = state

    def _blend_embeddings(self, rows: np.ndarray, new: np.ndarray) -> None:
        m = self.cfg.embedding_momentum
        emb = self._emb.copy()
        old = emb[rows]
        blended = np.where(self._has_emb[rows, None], m * old + (1 - m) * new, new)
        norm = np.linalg.norm(blended, axis=1, keepdims=True)
        emb[rows] = blended / np.maximum(norm, 1e-12)
        self._emb = emb
        has = self._has_emb.copy()
        has[rows] = True
        self._has_emb = has

    def _birth(self, rows: np.ndarray, boxes: np.ndarray, conf: np.ndarray,
               embeddings: np.ndarray | None) -> None:
        k = len(rows)
        if k == 0:
            return
        mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(boxes[rows]))
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        state = CONFIRMED if self.cfg.min_hits <= 1 else TENTATIVE
        emb = np.zeros((k, self._emb.shape[1]), np.float32)
        if embeddings is not None:
            emb = embeddings[rows].astype(np.float32)  # a copy: the caller's array stays theirs
        self._ids = np.concatenate([self._ids, ids])
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._state = np.concatenate([self._state, np.full(k, state, np.int8)])
        self._hits = np.concatenate([self._hits, np.ones(k, np.int32)])
        self._missed = np.concatenate([self._missed, np.zeros(k, np.int32)])
        self._anchor = np.concatenate([self._anchor, boxes[rows].astype(np.float64)])
        self._full = np.concatenate([self._full, box_area(boxes[rows])])
        self._age = np.concatenate([self._age, np.zeros(k, np.int32)])
        self._score = np.concatenate([self._score, conf[rows].astype(np.float32)])
        self._emb = np.concatenate([self._emb, emb])
        self._has_emb = np.concatenate([self._has_emb, np.full(k, embeddings is not None)])

    def _drop(self, gone: np.ndarray) -> None:
        if not gone.any():
            return
        keep = ~gone
        for name in ("_ids", "_mean", "_cov", "_state", "_hits", "_missed", "_anchor", "_full", "_age", "_score",
                     "_emb", "_has_emb"):
            setattr(self, name, getattr(self, name)[keep])

    def _check_embeddings(self, detections: Detections, embeddings: np.ndarray) -> None:
        if not isinstance(embeddings, np.ndarray) or embeddings.dtype != np.float32 or embeddings.ndim != 2:
            found = (f"{embeddings.dtype} array of shape {embeddings.shape}"
                     if isinstance(embeddings, np.ndarray) else type(embeddings).__name__)
            raise TypeError(f"track: embeddings must be a float32 [N, D] array, found {found}")
        if embeddings.shape[0] != len(detections):
            raise ValueError(
                f"track: expected one embedding per detection ({len(detections)} rows), "
                f"found {embeddings.shape[0]}"
            )
        dim = embeddings.shape[1]
        if self.cfg.appearance_weight > 0 and self._has_emb.any() and dim != self._emb.shape[1]:
            raise ValueError(
                f"track: embeddings have dimension {dim}, earlier frames had {self._emb.shape[1]}; "
                "call reset() when the embedder changes"
            )
        if self.cfg.appearance_weight > 0 and dim != self._emb.shape[1]:
            # First embeddings seen (no track has one yet): size the store to their width.
            self._emb = np.zeros((len(self._ids), dim), np.float32)
