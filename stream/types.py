"""Data passed between stages, defined once.

Conventions: images are uint8 BGR ``[H, W, 3]``; boxes are ``xyxy`` float32 in *source* pixels
(x right, y down, x2/y2 exclusive); times are ``time.monotonic()`` seconds unless named ``utc``
(seconds since the epoch). Every array is validated at construction and never mutated afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _check(name: str, arr: np.ndarray, dtype: type | tuple[type, ...], ndim: int) -> None:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, found {type(arr).__name__}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if arr.dtype.type not in dtypes:
        want = "/".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name}: expected dtype {want}, found {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, found shape {arr.shape}")


def _rows(name: str, n: int, *arrays: tuple[str, np.ndarray]) -> None:
    for sub, arr in arrays:
        if arr.shape[0] != n:
            raise ValueError(f"{name}.{sub}: expected {n} rows, found {arr.shape[0]}")


def _row_index(name: str, n: int, rows: np.ndarray | list[int] | list[bool]) -> np.ndarray:
    """``rows`` (a bool mask of ``n`` or integer row numbers) as int64 row numbers."""
    idx = np.asarray(rows)
    if idx.dtype == np.bool_:
        if idx.shape != (n,):
            raise ValueError(f"{name}.select: expected a bool mask of {n} rows, found shape {idx.shape}")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name}.select: expected a bool mask or integer rows, found {idx.dtype} {idx.shape}")
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"{name}.select: rows must lie in [0, {n}), found {idx.min()}..{idx.max()}")
    return idx.astype(np.int64) % max(n, 1)


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    image: uint8 [H, W, 3] BGR, the source's own size (it may change between frames).
    index: 0-based counter of frames decoded from this source (gaps mean drops).
    t_capture: monotonic seconds when the frame left the decoder.
    utc_capture: the same instant as seconds since the epoch.
    source: the source's name with credentials redacted.
    analysis: None, or uint8 [h, w, 3] BGR: the same picture already scaled to the segmenter's input
        size by the decoder's scaler (``Source.analysis_size``), so large frames are resized once, on
        the capture thread; crops and the overlay still use ``image``.
    """

    image: np.ndarray
    index: int
    t_capture: float
    utc_capture: float
    source: str
    analysis: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check("Frame.image", self.image, np.uint8, 3)
        if self.image.shape[2] != 3:
            raise ValueError(f"Frame.image: expected 3 channels (BGR), found {self.image.shape[2]}")
        if self.analysis is not None:
            _check("Frame.analysis", self.analysis, np.uint8, 3)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class SegMap:
    """The segmenter's output for one frame, at the model's resolution.

    classes: uint8 [h, w] class ids (0 = background; see ``class_names``).
    confidence: float32 [h, w] in [0, 1], the probability of the chosen class.
    class_names: names of the class ids, from the model's metadata.
    source_size: (width, height) of the frame it was computed from; model pixel (x, y) maps to
        source pixel (x * W / w, y * H / h).
    """

    classes: np.ndarray
    confidence: np.ndarray
    class_names: tuple[str, ...]
    source_size: tuple[int, int]

    def __post_init__(self) -> None:
        _check("SegMap.classes", self.classes, np.uint8, 2)
        _check("SegMap.confidence", self.confidence, np.float32, 2)
        if self.classes.shape != self.confidence.shape:
            raise ValueError(f"SegMap: classes {self.classes.shape} and confidence {self.confidence.shape} differ")

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): source pixels per model pixel."""
        h, w = self.classes.shape
        return self.source_size[0] / w, self.source_size[1] / h


@dataclass(frozen=True)
class Detections:
    """One row per item found in a frame (parallel arrays, N rows).

    xyxy: float32 [N, 4] box in source pixels.
    area: float32 [N] item area in source pixels.
    centroid: float32 [N, 2] (x, y) in source pixels.
    confidence: float32 [N] mean segmenter confidence over the item's item-class pixels (its
        boundary band left out; all its pixels when it is all boundary), in [0, 1].
    class_id: int32 [N] segmenter class of the item.
    instance_map: int32 [h, w] at the segmenter's resolution: 0 = none, i + 1 = row i.
        Used to mask crops and tint the overlay.
    """

    xyxy: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    instance_map: np.ndarray

    def __post_init__(self) -> None:
        _check("Detections.xyxy", self.xyxy, np.float32, 2)
        _check("Detections.area", self.area, np.float32, 1)
        _check("Detections.centroid", self.centroid, np.float32, 2)
        _check("Detections.confidence", self.confidence, np.float32, 1)
        _check("Detections.class_id", self.class_id, np.int32, 1)
        _check("Detections.instance_map", self.instance_map, np.int32, 2)
        n = len(self)
        _rows(
            "Detections",
            n,
            ("area", self.area),
            ("centroid", self.centroid),
            ("confidence", self.confidence),
            ("class_id", self.class_id),
        )
        if self.xyxy.shape[1] != 4 or self.centroid.shape[1] != 2:
            raise ValueError("Detections: xyxy must be [N, 4] and centroid [N, 2]")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def select(self, rows: np.ndarray | list[int] | list[bool]) -> Detections:
        """The given rows (a bool mask or row numbers, in that order), with ``instance_map``
        renumbered to match (items not selected become 0)."""
        idx = _row_index("Detections", len(self), rows)
        lut = np.zeros(len(self) + 1, np.int32)
        lut[idx + 1] = np.arange(1, len(idx) + 1, dtype=np.int32)
        return Detections(
            xyxy=self.xyxy[idx],
            area=self.area[idx],
            centroid=self.centroid[idx],
            confidence=self.confidence[idx],
            class_id=self.class_id[idx],
            instance_map=lut[self.instance_map],
        )

    __getitem__ = select

    @staticmethod
    def empty(map_shape: tuple[int, int] = (1, 1)) -> Detections:
        return Detections(
            xyxy=np.zeros((0, 4), np.float32),
            area=np.zeros(0, np.float32),
            centroid=np.zeros((0, 2), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int32),
            instance_map=np.zeros(map_shape, np.int32),
        )


# Track states, in lifecycle order.
TENTATIVE, CONFIRMED, LOST, REMOVED = 0, 1, 2, 3
TRACK_STATE_NAMES = ("tentative", "confirmed", "lost", "removed")


@dataclass(frozen=True)
class Tracks:
    """The tracker's view after one update (parallel arrays, M rows).

    track_id: int64 [M] ids unique within one tracker instance, never reused.
    xyxy: float32 [M, 4] the Kalman-filtered box in source pixels.
    state: int8 [M] one of TENTATIVE, CONFIRMED, LOST, REMOVED. REMOVED rows appear exactly once,
        in the update that removes them.
    detection_index: int64 [M] the row of this frame's Detections matched to the track, -1 if none.
    score: float32 [M] detection confidence of the last match.
    age: int32 [M] frames since the track was created.
    """

    track_id: np.ndarray
    xyxy: np.ndarray
    state: np.ndarray
    detection_index: np.ndarray
    score: np.ndarray
    age: np.ndarray

    def __post_init__(self) -> None:
        _check("Tracks.track_id", self.track_id, np.int64, 1)
        _check("Tracks.xyxy", self.xyxy, np.float32, 2)
        _check("Tracks.state", self.state, np.int8, 1)
        _check("Tracks.detection_index", self.detection_index, np.int64, 1)
        _check("Tracks.score", self.score, np.float32, 1)
        _check("Tracks.age", self.age, np.int32, 1)
        _rows(
            "Tracks",
            len(self),
            ("xyxy", self.xyxy),
            ("state", self.state),
            ("detection_index", self.detection_index),
            ("score", self.score),
            ("age", self.age),
        )

    def __len__(self) -> int:
        return int(self.track_id.shape[0])

    def select(self, rows: np.ndarray | list[int] | list[bool]) -> Tracks:
        """The given rows (a bool mask or row numbers, in that order)."""
        idx = _row_index("Tracks", len(self), rows)
        return Tracks(
            track_id=self.track_id[idx],
            xyxy=self.xyxy[idx],
            state=self.state[idx],
            detection_index=self.detection_index[idx],
            score=self.score[idx],
            age=self.age[idx],
        )

    __getitem__ = select

    @staticmethod
    def empty() -> Tracks:
        return Tracks(
            track_id=np.zeros(0, np.int64),
            xyxy=np.zeros((0, 4), np.float32),
            state=np.zeros(0, np.int8),
            detection_index=np.zeros(0, np.int64),
            score=np.zeros(0, np.float32),
            age=np.zeros(0, np.int32),
        )


@dataclass(frozen=True)
class Match:
    """A catalog lookup result for one query vector.

    products: product ids, best first (length k).
    scores: cosine similarity of each, float, best first.
    """

    products: tuple[str, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Label:
    """A track's settled recognition.

    product: the best product id, or "unknown" when the best score is below the threshold.
    score: aggregated cosine similarity of the best product.
    margin: best score minus the second best (how sure the choice is).
    topk: ((product, score), ...) best first.
    unknown: True when the best match is below threshold.
    n_embeddings: how many crops the label aggregates.
    """

    product: str
    score: float
    margin: float
    topk: tuple[tuple[str, float], ...]
    unknown: bool
    n_embeddings: int


UNKNOWN = "unknown"


@dataclass(frozen=True)
class TrackView:
    """One confirmed track as seen in one frame, for overlay and the frames log."""

    track_id: int
    xyxy: tuple[float, float, float, float]
    detection_index: int
    label: Label | None


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent in each stage on one frame."""

    segment: float = 0.0
    boxes: float = 0.0
    track: float = 0.0
    classify: float = 0.0
    overlay: float = 0.0


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline learned from one frame."""

    frame: Frame
    detections: Detections
    tracks: tuple[TrackView, ...]
    events: tuple[dict, ...]
    times: StageTimes = field(default_factory=StageTimes)
