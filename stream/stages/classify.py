"""Recognition of tracked items: budgeted crop embedding, catalog lookup, settled per-track labels.

Only confirmed tracks matched in the current frame are embedded, at most ``crops_per_frame`` per frame
and each track at most every ``refresh_frames`` frames, so classification never stalls the loop. A
track's label comes from the quality-weighted mean of its recent embeddings; it is reported once it has
``min_embeddings`` and changes only when another product wins by ``switch_margin`` (no flicker).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from stream.config import ClassifyConfig
from stream.stages.protocols import CatalogLike, EmbedderLike
from stream.types import CONFIRMED, REMOVED, UNKNOWN, Detections, Frame, Label, Match, Tracks

BORDER_WEIGHT = 0.3  # a crop cut by the frame edge shows part of the item: trust it less


@dataclass(frozen=True)
class UnknownRule:
    """When a match is not trusted and the item is called unknown. One rule for the runtime (per track,
    on the mean of its embeddings) and for ``eval catalog`` / the benchmarks (per photo).

    Unknown when the best product's cosine is below ``threshold`` (``classify.unknown_threshold``), or
    when it stands less than ``margin`` (``classify.unknown_margin``; 0 turns this off) above the mean
    of the next ``cohort`` products' scores (``classify.unknown_cohort``). The margin needs no tuning
    per catalog: a product absent from the catalog resembles several products about equally, while a
    present one stands out from the rest, whether the catalog holds one packshot or dozens of photos
    per product (a raw cosine threshold moves with the photos per product). A catalog with a single
    product has no cohort: only the threshold applies.
    """

    threshold: float
    margin: float = 0.0
    cohort: int = 4

    @classmethod
    def from_config(cls, cfg: ClassifyConfig) -> UnknownRule:
        return cls(threshold=cfg.unknown_threshold, margin=cfg.unknown_margin, cohort=cfg.unknown_cohort)

    @property
    def k(self) -> int:
        """Products a search must return for the rule: the best and its cohort."""
        return self.cohort + 1

    def describe(self) -> dict[str, float | int | str]:
        return {
            "rule": f"unknown when best cosine < threshold or best - mean(next {self.cohort}) < margin",
            "threshold": self.threshold,
            "margin": self.margin,
            "cohort": self.cohort,
        }

    def standout(self, ranked: np.ndarray) -> np.ndarray:
        """best - mean of the next ``cohort`` scores, per row of scores sorted best first [Q, K];
        +inf for rows with no other product."""
        ranked = np.asarray(ranked, dtype=np.float64)
        if ranked.ndim != 2 or ranked.shape[1] < 2:
            return np.full(len(ranked), np.inf)
        return ranked[:, 0] - ranked[:, 1 : 1 + self.cohort].mean(axis=1)

    def rejected(self, ranked: np.ndarray, threshold: float | None = None, margin: float | None = None) -> np.ndarray:
        """bool [Q]: the rule (or the rule at another ``threshold`` / ``margin``, for sweeps) on rows of
        product scores sorted best first [Q, K]."""
        t = self.threshold if threshold is None else threshold
        m = self.margin if margin is None else margin
        ranked = np.asarray(ranked, dtype=np.float64)
        out = ranked[:, 0] < t if ranked.size else np.zeros(len(ranked), bool)
        return (out | (self.standout(ranked) < m)) if m > 0 else out

    def rejects(self, scores: tuple[float, ...]) -> bool:
        """The rule on one match's product scores, best first (``Match.scores``)."""
        if not scores:
            return True
        return bool(self.rejected(np.asarray([scores[: self.k]], dtype=np.float64))[0])

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(best product index [Q], rejected [Q], scores of the best ``k`` products sorted [Q, k]) from
        every product's score [Q, P]."""
        order = np.argsort(-scores, axis=1)[:, : self.k]
        ranked = np.take_along_axis(scores, order, axis=1)
        return order[:, 0], self.rejected(ranked), ranked


@dataclass
class _TrackMemory:
    vectors: deque = field(default_factory=deque)
    weights: deque = field(default_factory=deque)
    last_frame: int = -(10**9)
    label: Label | None = None


def crop_item(frame: Frame, detections: Detections, row: int, padding: float, mask_background: bool) -> np.ndarray:
    """The padded box of detection ``row`` cut from the frame (a copy), optionally with the pixels
    outside the item's mask set to neutral grey."""
    h, w = frame.image.shape[:2]
    x1, y1, x2, y2 = detections.xyxy[row]
    px, py = (x2 - x1) * padding, (y2 - y1) * padding
    ix1, iy1 = max(0, int(x1 - px)), max(0, int(y1 - py))
    ix2, iy2 = min(w, int(np.ceil(x2 + px))), min(h, int(np.ceil(y2 + py)))
    crop = frame.image[iy1:iy2, ix1:ix2].copy()
    if mask_background and crop.size:
        inst = detections.instance_map
        sy, sx = inst.shape[0] / h, inst.shape[1] / w
        sub = inst[
            int(iy1 * sy) : max(int(iy1 * sy) + 1, int(np.ceil(iy2 * sy))),
            int(ix1 * sx) : max(int(ix1 * sx) + 1, int(np.ceil(ix2 * sx))),
        ]
        mask = cv2.resize(
            (sub == row + 1).astype(np.uint8), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST
        )
        crop[mask == 0] = 127
    return crop


class Classifier:
    """Turns tracks into settled product labels; returns the labels that changed in each update."""

    def __init__(self, cfg: ClassifyConfig, embedder: EmbedderLike | None, catalog: CatalogLike | None) -> None:
        self.cfg = cfg
        self.embedder = embedder
        self.catalog = catalog
        self.rule = UnknownRule.from_config(cfg)
        self._tracks: dict[int, _TrackMemory] = {}
        self._frame = 0
        self.crops_embedded = 0

    @property
    def enabled(self) -> bool:
        return self.embedder is not None and self.catalog is not None

    def reset(self) -> None:
        self._tracks.clear()
        self._frame = 0

    def label(self, track_id: int) -> Label | None:
        mem = self._tracks.get(track_id)
        return None if mem is None else mem.label

    def update(self, frame: Frame, detections: Detections, tracks: Tracks) -> dict[int, Label]:
        """Embed due crops, refresh labels; return {track_id: label} for labels first settled or
        changed in this frame."""
        self._frame += 1
        for tid, state in zip(tracks.track_id.tolist(), tracks.state.tolist(), strict=True):
            if state == REMOVED:
                self._tracks.pop(tid, None)
        if not self.enabled:
            return {}
        due = self._due(tracks)
        if not due:
            return {}
        crops = [crop_item(frame, detections, row, self.cfg.crop_padding, self.cfg.mask_background) for _, row in due]
        vectors = self.embedder.embed(crops)  # type: ignore[union-attr]
        self.crops_embedded += len(crops)
        size = frame.size
        for (tid, row), vec in zip(due, vectors, strict=True):
            mem = self._tracks.setdefault(tid, _TrackMemory())
            mem.vectors.append(vec)
            mem.weights.append(self._quality(detections, row, size))
            mem.last_frame = self._frame
            while len(mem.vectors) > self.cfg.max_embeddings:
                mem.vectors.popleft()
                mem.weights.popleft()
        return self._relabel([tid for tid, _ in due])

    def _due(self, tracks: Tracks) -> list[tuple[int, int]]:
        """(track_id, detection row) pairs to embed now, least-known tracks first, within budget."""
        candidates = []
        for tid, state, row in zip(
            tracks.track_id.tolist(), tracks.state.tolist(), tracks.detection_index.tolist(), strict=True
        ):
            if state != CONFIRMED or row < 0:
                continue
            mem = self._tracks.get(tid)
            n, last = (0, -(10**9)) if mem is None else (len(mem.vectors), mem.last_frame)
            if self._frame - last >= self.cfg.refresh_frames or n < self.cfg.min_embeddings:
                candidates.append((n, last, tid, row))
        candidates.sort()
        return [(tid, row) for _, _, tid, row in candidates[: self.cfg.crops_per_frame]]

    def _quality(self, detections: Detections, row: int, size: tuple[int, int]) -> float:
        x1, y1, x2, y2 = detections.xyxy[row]
        on_border = x1 <= 1 or y1 <= 1 or x2 >= size[0] - 1 or y2 >= size[1] - 1
        return float(detections.confidence[row]) * (BORDER_WEIGHT if on_border else 1.0)

    def _relabel(self, track_ids: list[int]) -> dict[int, Label]:
        ready = [t for t in track_ids if len(self._tracks[t].vectors) >= self.cfg.min_embeddings]
        if not ready:
            return {}
        means = np.stack([self._mean(self._tracks[t]) for t in ready])
        k = max(self.cfg.top_k, self.rule.k)  # the rule looks past the reported candidates
        matches = self.catalog.search(means, k)  # type: ignore[union-attr]
        changed = {}
        for tid, match in zip(ready, matches, strict=True):
            mem = self._tracks[tid]
            new = self._to_label(match, len(mem.vectors))
            old = mem.label
            if old is None:
                mem.label = new
                changed[tid] = new
            elif new.product == old.product:
                mem.label = new
            elif new.score - dict(new.topk).get(old.product, -1.0) >= self.cfg.switch_margin:
                mem.label = new
                changed[tid] = new
        return changed

    @staticmethod
    def _mean(mem: _TrackMemory) -> np.ndarray:
        v = np.stack(mem.vectors).astype(np.float32)
        w = np.asarray(mem.weights, np.float32)
        m = (v * (w[:, None] + 1e-6)).sum(axis=0)
        return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)

    def _to_label(self, match: Match, n: int) -> Label:
        unknown = self.rule.rejects(match.scores)
        topk = tuple(zip(match.products, (float(s) for s in match.scores), strict=True))[: self.cfg.top_k]
        best = topk[0][1] if topk else -1.0
        second = topk[1][1] if len(topk) > 1 else -1.0
        product = UNKNOWN if unknown or not topk else topk[0][0]
        return Label(product=product, score=best, margin=best - second, topk=topk, unknown=unknown, n_embeddings=n)
