"""Recognition of tracked items: budgeted crop embedding, catalog lookup, settled per-track labels.

Only confirmed tracks matched in the current frame are cropped, at most ``crops_per_s`` per second of
stream time and each track at most every ``refresh_frames`` frames; the crops are embedded and looked
up on a worker thread of their own (``stream.stages.embed_worker``) so that classification never holds
up the frame loop, or inline for offline files. A track's label comes from the quality-weighted mean
of its recent embeddings; it is reported once it has ``min_embeddings`` and changes only when another
product wins by ``switch_margin`` (no flicker).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stream.config import ClassifyConfig
from stream.stages.embed_worker import BatchWorker
from stream.stages.protocols import BoxesLike, CatalogLike, EmbedderLike, SegmenterLike
from stream.stats import Percentiles
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


class LargestItemCrop:
    """A catalog photo -> its largest item, cut as ``crop_item`` cuts the runtime's item crops (None when
    the segmenter finds no item): the ``ItemCrop`` of ``catalog.item_views``."""

    def __init__(self, segmenter: SegmenterLike, boxes: BoxesLike, padding: float, mask_background: bool) -> None:
        self._segmenter = segmenter
        self._boxes = boxes
        self._padding = padding
        self._mask = mask_background

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        detections = self._boxes.extract(self._segmenter.segment(image))
        if not len(detections.area):
            return None
        frame = Frame(image=image, index=0, t_capture=0.0, utc_capture=0.0, source="photo")
        return crop_item(frame, detections, int(np.argmax(detections.area)), self._padding, self._mask)


@dataclass(frozen=True)
class _Job:
    """One crop to embed, with what the worker needs to label its track without touching the
    update thread's state: the track's embeddings so far (a snapshot; one job per track in flight)."""

    track_id: int
    crop: np.ndarray
    weight: float
    vectors: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    generation: int
    t_submit: float  # perf_counter


@dataclass(frozen=True)
class _Result:
    job: _Job
    vector: np.ndarray
    match: Match | None  # the track's mean embedding searched; None below min_embeddings


MODES = ("auto", "thread", "inline")


class Classifier:
    """Turns tracks into settled product labels; returns the labels that changed in each update.

    Crops are cut on the caller's (update) thread; embedding and the catalog search run on a worker
    thread of their own (``start(background=True)``) or inline in ``update`` (the default, and the
    runtime's choice for offline files, so that a file gives the same events on every machine). With
    the worker, ``update`` never waits: it applies the results finished since the last frame and
    hands the frame's due crops over, so a label arrives some frames after its crop was cut and the
    ``item.classified`` event carries the frame it was applied to.

    Budget: at most ``crops_per_s`` crops per second of stream time (a token bucket of ``batch``
    crops: the capture clock for live sources, frame index / fps for files), at most ``queue`` in
    flight, one per track; least-known tracks first; each track re-embedded at most every
    ``refresh_frames`` frames.
    """

    def __init__(self, cfg: ClassifyConfig, embedder: EmbedderLike | None, catalog: CatalogLike | None) -> None:
        self.cfg = cfg
        self.embedder = embedder
        self.catalog = catalog
        self.rule = UnknownRule.from_config(cfg)
        self._tracks: dict[int, _TrackMemory] = {}
        self._pending: set[int] = set()  # tracks with a crop in flight
        self._frame = 0
        self._generation = 0  # bumped by reset(): results of older crops are discarded
        self._tokens = 0.0
        self._clock: float | None = None
        self._fps: float | None = None  # set: the budget's clock is frame index / fps (files)
        self._worker: BatchWorker[_Job, _Result] | None = None
        self._mode = "inline"
        self.crops_embedded = 0
        self.batches = 0
        self.deferred = 0  # due crops held back because the queue was full
        self.embed_ms = Percentiles(10_000)  # per batch (written by the worker)
        self.lag_ms = Percentiles(10_000)  # crop cut -> its result applied

    @property
    def enabled(self) -> bool:
        return self.embedder is not None and self.catalog is not None

    @property
    def background(self) -> bool:
        return self._worker is not None

    def start(self, *, background: bool, fps: float | None = None) -> None:
        """Choose where crops are embedded (``classify.worker`` may force it: ``thread`` or
        ``inline``) and the budget's clock: capture time when ``fps`` is None, else frame index / fps."""
        mode = self.cfg.worker
        use_thread = mode == "thread" or (mode == "auto" and background)
        self._fps = fps
        if use_thread and self.enabled and self._worker is None:
            self._worker = BatchWorker(
                self._work, capacity=self.cfg.queue, batch=self.cfg.batch, name="classify", nice=self.cfg.worker_nice
            )
            self._worker.start()
        self._mode = "thread" if self._worker is not None else "inline"

    def close(self) -> None:
        """Stop and join the worker (pending crops are discarded)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._pending.clear()

    def reset(self) -> None:
        self._tracks.clear()
        self._pending.clear()
        self._generation += 1
        self._frame = 0
        self._clock = None

    def label(self, track_id: int) -> Label | None:
        mem = self._tracks.get(track_id)
        return None if mem is None else mem.label

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self._mode,
            "crops_embedded": self.crops_embedded,
            "batches": self.batches,
            "deferred": self.deferred,
            "embed_ms": self.embed_ms.summary(),
            "label_lag_ms": self.lag_ms.summary(),
        }

    def update(self, frame: Frame, detections: Detections, tracks: Tracks) -> dict[int, Label]:
        """Apply finished embeddings, hand over the due crops; return {track_id: label} for labels
        first settled or changed in this update."""
        self._frame += 1
        for tid, state in zip(tracks.track_id.tolist(), tracks.state.tolist(), strict=True):
            if state == REMOVED:
                self._tracks.pop(tid, None)
                self._pending.discard(tid)
        if not self.enabled:
            return {}
        changed = self._apply(self._worker.collect()) if self._worker is not None else {}
        jobs = self._submit(frame, detections, tracks)
        if self._worker is None and jobs:
            changed.update(self._apply(self._work(jobs)))
        return changed

    # -- budget and hand-over (update thread) ----------------------------------------------------
    def _refill(self, frame: Frame) -> None:
        now = frame.index / self._fps if self._fps else frame.t_capture
        if self._clock is None:
            self._tokens = float(self.cfg.batch)
        else:  # the epsilon keeps 120/s at 30 fps at exactly 4 a frame despite rounding
            self._tokens = min(
                float(self.cfg.batch), self._tokens + max(0.0, now - self._clock) * self.cfg.crops_per_s + 1e-9
            )
        self._clock = now

    def _submit(self, frame: Frame, detections: Detections, tracks: Tracks) -> list[_Job]:
        self._refill(frame)
        due = self._due(tracks)
        room = self._worker.room if self._worker is not None else len(due)
        n = min(len(due), int(self._tokens), room)
        if len(due) > n and n == room:
            self.deferred += len(due) - n
        jobs = []
        now = time.perf_counter()
        for tid, row in due[:n]:
            mem = self._tracks.setdefault(tid, _TrackMemory())
            mem.last_frame = self._frame
            job = _Job(
                track_id=tid,
                crop=crop_item(frame, detections, row, self.cfg.crop_padding, self.cfg.mask_background),
                weight=self._quality(detections, row, frame.size),
                vectors=tuple(mem.vectors),
                weights=tuple(mem.weights),
                generation=self._generation,
                t_submit=now,
            )
            if self._worker is not None:
                self._worker.submit(job)  # room was checked: never refused
            self._pending.add(tid)
            jobs.append(job)
        self._tokens -= n
        return jobs

    def _due(self, tracks: Tracks) -> list[tuple[int, int]]:
        """(track_id, detection row) pairs due for a crop, least-known tracks first."""
        candidates = []
        for tid, state, row in zip(
            tracks.track_id.tolist(), tracks.state.tolist(), tracks.detection_index.tolist(), strict=True
        ):
            if state != CONFIRMED or row < 0 or tid in self._pending:
                continue
            mem = self._tracks.get(tid)
            n, last = (0, -(10**9)) if mem is None else (len(mem.vectors), mem.last_frame)
            if self._frame - last >= self.cfg.refresh_frames or n < self.cfg.min_embeddings:
                candidates.append((n, last, tid, row))
        candidates.sort()
        return [(tid, row) for _, _, tid, row in candidates]

    def _quality(self, detections: Detections, row: int, size: tuple[int, int]) -> float:
        x1, y1, x2, y2 = detections.xyxy[row]
        on_border = x1 <= 1 or y1 <= 1 or x2 >= size[0] - 1 or y2 >= size[1] - 1
        return float(detections.confidence[row]) * (BORDER_WEIGHT if on_border else 1.0)

    # -- embedding and search (worker thread, or inline) -----------------------------------------
    def _work(self, jobs: list[_Job]) -> list[_Result]:
        """Embed the jobs' crops in one call and search the catalog once for every track that now has
        ``min_embeddings``: pure with respect to the classifier's state."""
        t0 = time.perf_counter()
        vectors = self.embedder.embed([j.crop for j in jobs])  # type: ignore[union-attr]
        means, rows = [], []
        for i, (job, vec) in enumerate(zip(jobs, vectors, strict=True)):
            keep = self.cfg.max_embeddings
            vecs, ws = (*job.vectors, vec)[-keep:], (*job.weights, job.weight)[-keep:]
            if len(vecs) >= self.cfg.min_embeddings:
                means.append(_mean(vecs, ws))
                rows.append(i)
        k = max(self.cfg.top_k, self.rule.k)  # the rule looks past the reported candidates
        found = self.catalog.search(np.stack(means), k) if means else []  # type: ignore[union-attr]
        matches: list[Match | None] = [None] * len(jobs)
        for i, match in zip(rows, found, strict=True):
            matches[i] = match
        self.batches += 1
        self.embed_ms.add((time.perf_counter() - t0) * 1000.0)
        return [_Result(j, v, m) for j, v, m in zip(jobs, vectors, matches, strict=True)]

    # -- results (update thread) -----------------------------------------------------------------
    def _apply(self, results: list[_Result]) -> dict[int, Label]:
        changed: dict[int, Label] = {}
        now = time.perf_counter()
        for res in results:
            job = res.job
            self.crops_embedded += 1
            if job.generation != self._generation or job.track_id not in self._pending:
                continue  # the track was removed, or the pipeline reset, while its crop was in flight
            self._pending.discard(job.track_id)
            self.lag_ms.add((now - job.t_submit) * 1000.0)
            mem = self._tracks.setdefault(job.track_id, _TrackMemory())
            mem.vectors.append(res.vector)
            mem.weights.append(job.weight)
            while len(mem.vectors) > self.cfg.max_embeddings:
                mem.vectors.popleft()
                mem.weights.popleft()
            if res.match is None:
                continue
            new = self._to_label(res.match, len(mem.vectors))
            old = mem.label
            if old is None:
                mem.label = new
                changed[job.track_id] = new
            elif new.product == old.product:
                mem.label = new
            elif new.score - dict(new.topk).get(old.product, -1.0) >= self.cfg.switch_margin:
                mem.label = new
                changed[job.track_id] = new
        return changed

    def _to_label(self, match: Match, n: int) -> Label:
        unknown = self.rule.rejects(match.scores)
        topk = tuple(zip(match.products, (float(s) for s in match.scores), strict=True))[: self.cfg.top_k]
        best = topk[0][1] if topk else -1.0
        second = topk[1][1] if len(topk) > 1 else -1.0
        product = UNKNOWN if unknown or not topk else topk[0][0]
        return Label(product=product, score=best, margin=best - second, topk=topk, unknown=unknown, n_embeddings=n)


def _mean(vectors: tuple[np.ndarray, ...], weights: tuple[float, ...]) -> np.ndarray:
    """The quality-weighted mean embedding, L2-normalised."""
    v = np.stack(vectors).astype(np.float32)
    w = np.asarray(weights, np.float32)
    m = (v * (w[:, None] + 1e-6)).sum(axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)
