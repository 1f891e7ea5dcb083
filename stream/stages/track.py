"""Track stage: ByteTrack-style multi-object tracking of item boxes.

Each update predicts every track one frame ahead (constant-velocity Kalman filter, ``stream.stages.kalman``)
and associates detections in two stages, as ByteTrack does:

1. confident detections (``conf >= high_threshold``) against every live track (tentative, confirmed
   and lost), gated by ``IoU >= match_iou``; the cost is ``1 - IoU``;
2. weak detections (``low_threshold <= conf < high_threshold``) against the tracks still unmatched and
   not lost, gated by ``IoU >= low_match_iou``, IoU only. A weak detection is usually a partly hidden
   item (a hand over it): it keeps that track alive but is not trusted to start one.

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

import numpy as np

from stream.config import TrackConfig
from stream.stages import kalman
from stream.stages.geometry import box_area, box_cover, box_iou, distance_match, gated_match
from stream.types import CONFIRMED, LOST, REMOVED, TENTATIVE, Detections, Tracks

log = logging.getLogger(__name__)

# A match with at least this share of the track's largest area moves the anchor (module docstring).
ANCHOR_AREA = 0.85
# For a lost track to take over an unreported one: IoU of the latter's box with the lost track's
# anchor, and the share of that box lying inside the anchor.
REACQUIRE_IOU = 0.5
REACQUIRE_INSIDE = 0.8


def can_start_track(confidence: np.ndarray, cfg: TrackConfig) -> np.ndarray:
    """bool [N]: the detections confident enough to start a track, that is to become an item (the
    birth rule of ``Tracker``). Tools that count items on still images count these, so their
    figures are what the runtime would report."""
    return (confidence >= cfg.high_threshold) & (confidence >= cfg.new_track_threshold)


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

    def update(self, detections: Detections) -> Tracks:
        """Advance one frame. Returns every live track, plus those removed now (state REMOVED, once)."""
        cfg = self.cfg
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
        t1, d1 = gated_match(iou, 1.0 - iou, cfg.match_iou)
        det_idx[t1] = high[d1]

        # Stage 2: weak detections keep unmatched, not-lost tracks alive.
        rest = np.flatnonzero((det_idx < 0) & (self._state != LOST))
        iou = box_iou(pred_xyxy[rest], boxes[low])
        t2, d2 = gated_match(iou, 1.0 - iou, cfg.low_match_iou)
        det_idx[rest[t2]] = low[d2]

        # Stage 3: fast motion (an item put down or swept off quickly) can leave no overlap with the
        # constant-velocity prediction; close, similar-sized confident detections still match.
        if cfg.distance_gate > 0:
            rest = np.flatnonzero(det_idx < 0)
            free = np.setdiff1d(high, det_idx[det_idx >= 0])
            t3, d3 = distance_match(pred_xyxy[rest], boxes[free], cfg.distance_gate)
            det_idx[rest[t3]] = free[d3]

        self._correct(det_idx, boxes, conf)
        self._miss(det_idx < 0)

        used = np.zeros(len(detections), bool)
        used[det_idx[det_idx >= 0]] = True
        born = high[~used[high] & can_start_track(conf[high], cfg)]
        self._birth(born, boxes, conf)
        det_idx = self._reacquire(
            np.concatenate([det_idx, born]), boxes, np.concatenate([unreported, np.ones(len(born), bool)])
        )

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
        t, l_ = gated_match(iou, 1.0 - iou, REACQUIRE_IOU)
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

    def _birth(self, rows: np.ndarray, boxes: np.ndarray, conf: np.ndarray) -> None:
        k = len(rows)
        if k == 0:
            return
        mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(boxes[rows]))
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        state = CONFIRMED if self.cfg.min_hits <= 1 else TENTATIVE
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

    def _drop(self, gone: np.ndarray) -> None:
        if not gone.any():
            return
        keep = ~gone
        for name in ("_ids", "_mean", "_cov", "_state", "_hits", "_missed", "_anchor", "_full", "_age", "_score"):
            setattr(self, name, getattr(self, name)[keep])
