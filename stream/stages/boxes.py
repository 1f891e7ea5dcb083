"""Boxes stage: the segmenter's class map becomes one detection per connected item.

The labelling is one pass of a run-based union-find Numba kernel (stream/stages/kernels.py); OpenCV's
``connectedComponentsWithStats`` instead visits every pixel again in its stats pass, which is why it
costs as much on an empty frame as on a full one (benchmarks/bench_boxes.py measures both).

Touching items: plain semantic segmentation merges items that touch. When the model has a boundary
class (and ``split_touching`` is on), only item pixels are labelled first; the boundary lines keep
touching items apart. Each item then grows back into the boundary pixels, breadth first, so it
recovers its rim and its box covers the whole item. A component most of whose outline lies on one
bigger neighbour (``ENCLOSED_SHARE``) is a fragment of that item (a panel, cap or highlight that
the segmenter outlined from inside) and is merged into it; so is a small component (at most
``boxes.weak_boundary_area`` of its neighbour's area) whose boundary with it the segmenter drew
unsure (mean boundary confidence on their contact below ``boxes.weak_boundary``): a cap, a corner or
a panel cut off at an inner colour edge, where two items side by side get a confident boundary
(``python3 benchmarks/bench_count_sweep.py --key boxes.weak_boundary``). Without a boundary class
every non-background pixel is labelled directly.

An item's confidence is the mean over its item-class pixels: the boundary band it grows back into
carries the boundary class's probability and is a larger share of a small item (or of one cut by
the frame's edge) than of a big one, so leaving it out keeps the tracker's thresholds meaning the
same at every item size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from stream.config import BoxesConfig
from stream.stages import kernels as K
from stream.types import Detections, SegMap

log = logging.getLogger(__name__)

BACKGROUND_NAME = "background"
# A component with at least this share of its outline on one bigger neighbour is a fragment of it
# (a printed panel, cap or highlight the segmenter outlined) and joins it; two touching items share
# at most a side (a quarter of a square's outline). 0 turns merging off.
ENCLOSED_SHARE = 0.5
BOUNDARY_NAMES = ("boundary", "item_boundary")
MAX_CLASSES = 256  # class ids are uint8


@dataclass(frozen=True)
class Components:
    """Connected components of one map, in the map's own pixels (not source pixels).

    labels: int32 [h, w], 0 = none, i + 1 = row i.
    xyxy: int32 [n, 4] bounding box, x2/y2 exclusive (max + 1).
    area: int64 [n] pixel count.
    centroid: float64 [n, 2] mean (x, y) pixel index, as OpenCV and scipy report it.
    confidence: float32 [n] mean confidence over the pixels (0 when none was given).
    class_id: int32 [n] most frequent item class (1 for a binary mask).
    """

    labels: np.ndarray
    xyxy: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

    def __len__(self) -> int:
        return int(self.area.shape[0])


class Scratch:
    """Working memory of the kernel, kept between frames so a stream does not re-allocate (and
    page-fault) tens of MB per frame. Grows to the largest map seen; one per stage instance."""

    def __init__(self) -> None:
        self.runs = np.empty((K.N_RUN_ROWS, 0), np.int32)
        self.pix = np.empty((2, 0), np.int32)

    def fit(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self.runs.shape[1] < K.runs_capacity(h, w):
            self.runs = np.empty((K.N_RUN_ROWS, K.runs_capacity(h, w)), np.int32)
        if self.pix.shape[1] < h * w:
            self.pix = np.empty((2, h * w), np.int32)
        return self.runs, self.pix


_NO_CONF = np.zeros((1, 1), np.float32)
_NO_ITEM = np.zeros(0, np.bool_)
_NO_WORDS = np.zeros(0, np.uint64)
_BINARY_LUT = np.full(256, K.SEED, np.uint8)
_BINARY_LUT[0] = K.BG
_BINARY_LUT.flags.writeable = False


def _words(classes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The map as uint64 words, for skipping background 8 pixels at a time (when id 0 is BG)."""
    if lut[0] != K.BG or not classes.flags.c_contiguous or classes.size % 8:
        return _NO_WORDS
    return classes.reshape(-1).view(np.uint64)


def _check_2d(name: str, arr: np.ndarray) -> None:
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        found = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name}: expected a 2-D array [h, w], found {found}")


def _as_u8(mask: np.ndarray) -> np.ndarray:
    _check_2d("mask", mask)
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    return (mask != 0).view(np.uint8)


def _eight(connectivity: int) -> bool:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity: expected 4 or 8, found {connectivity!r}")
    return connectivity == 8


def _conf(confidence: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if confidence is None:
        return _NO_CONF
    if confidence.shape != shape:
        raise ValueError(f"confidence: expected shape {shape}, found {confidence.shape}")
    return confidence.astype(np.float32, copy=False)


def _components(
    labels: np.ndarray, area: np.ndarray, box: np.ndarray, sums: np.ndarray, *, class_id: np.ndarray, has_conf: bool
) -> Components:
    div = np.maximum(area, 1).astype(np.float64)
    conf = sums[:, 2] / div if has_conf else np.zeros(len(area))
    return Components(
        labels=labels,
        xyxy=box,
        area=area,
        centroid=sums[:, :2] / div[:, None],
        confidence=conf.astype(np.float32),
        class_id=class_id,
    )


def components_with_stats(
    mask: np.ndarray, connectivity: int = 8, confidence: np.ndarray | None = None, scratch: Scratch | None = None
) -> Components:
    """Components of a 2-D mask's non-zero pixels with box, area, centroid (and mean confidence).

    The counterpart of ``cv2.connectedComponentsWithStats`` without its background row. Pass a
    ``Scratch`` to reuse working memory across calls.
    """
    m8 = _as_u8(mask)
    conf = _conf(confidence, m8.shape)
    runs, pix = (scratch or Scratch()).fit(*m8.shape)
    labels, _, area, box, sums, class_id, _ = K.extract(
        m8,
        _words(m8, _BINARY_LUT),
        conf,
        confidence is not None,
        _BINARY_LUT,
        _NO_ITEM,
        _eight(connectivity),
        0.0,
        runs,
        pix,
        0,
    )
    return _components(labels, area, box, sums, class_id=class_id, has_conf=confidence is not None)


def label_components(mask: np.ndarray, connectivity: int = 8, scratch: Scratch | None = None) -> tuple[np.ndarray, int]:
    """Label the non-zero pixels of a 2-D mask: (int32 labels 1..n in raster order, n)."""
    comps = components_with_stats(mask, connectivity, scratch=scratch)
    return comps.labels, len(comps)


def region_stats(labels: np.ndarray, n: int, confidence: np.ndarray | None = None) -> Components:
    """Stats of an existing label image (e.g. a ground-truth instance map); labels > n are ignored."""
    _check_2d("labels", labels)
    lab32 = labels.astype(np.int32, copy=False)
    conf = _conf(confidence, lab32.shape)
    area, box, sums = K.region_stats(lab32, int(n), conf, confidence is not None)
    return _components(lab32, area, box, sums, class_id=np.ones(int(n), np.int32), has_conf=confidence is not None)


@dataclass(frozen=True)
class _ClassPlan:
    """How each class id is treated, derived once per distinct ``class_names``."""

    lut: np.ndarray  # uint8 [256]: BG / SEED / GROW / UNKNOWN per class id
    item: np.ndarray  # bool [n_classes]: ids that name an item (not background, not boundary)
    split: bool


def class_plan(names: tuple[str, ...], split_touching: bool) -> _ClassPlan:
    """Find background and boundary by name; every other class is an item class."""
    if BACKGROUND_NAME not in names:
        raise ValueError(
            f"SegMap.class_names: expected a class named '{BACKGROUND_NAME}', found "
            f"{names}; fix the segmenter's class_names metadata"
        )
    if len(names) > MAX_CLASSES:
        raise ValueError(f"SegMap.class_names: at most {MAX_CLASSES} classes fit a uint8 map, found {len(names)}")
    boundary = [i for i, nm in enumerate(names) if nm in BOUNDARY_NAMES]
    split = split_touching and bool(boundary)
    lut = np.full(256, K.UNKNOWN, np.uint8)
    lut[: len(names)] = K.SEED
    lut[names.index(BACKGROUND_NAME)] = K.BG
    lut[boundary] = K.GROW if split else K.SEED
    item = lut[: len(names)] == K.SEED
    item[boundary] = False
    lut.flags.writeable = False
    item.flags.writeable = False
    return _ClassPlan(lut=lut, item=item, split=split)


class BoxExtractor:
    """SegMap -> Detections: one row per connected item, boxes in source pixels."""

    def __init__(self, cfg: BoxesConfig, *, enclosed_share: float = ENCLOSED_SHARE) -> None:
        self._cfg = cfg
        self._enclosed = float(enclosed_share)
        self._weak = (cfg.weak_boundary, cfg.weak_boundary_area)
        self._eight = _eight(cfg.connectivity)
        self._plans: dict[tuple[str, ...], _ClassPlan] = {}
        self._scratch = Scratch()

    def _plan_for(self, names: tuple[str, ...]) -> _ClassPlan:
        plan = self._plans.get(names)
        if plan is None:
            plan = class_plan(names, self._cfg.split_touching)
            self._plans[names] = plan
            if self._cfg.split_touching and not plan.split:
                log.info("boxes: no boundary class in %s; touching items stay merged", names)
        return plan

    def extract(self, segmap: SegMap) -> Detections:
        names = tuple(segmap.class_names)
        plan = self._plan_for(names)
        h, w = segmap.classes.shape
        runs, pix = self._scratch.fit(h, w)
        labels, m, area, box, sums, class_id, n_unknown = K.extract(
            segmap.classes,
            _words(segmap.classes, plan.lut),
            segmap.confidence,
            True,
            plan.lut,
            plan.item,
            self._eight,
            self._cfg.min_area_frac * h * w,
            runs,
            pix,
            self._cfg.boundary_reach,
            self._enclosed if plan.split else 0.0,
            *self._weak,
        )
        if n_unknown:
            raise ValueError(
                f"SegMap.classes: {n_unknown} pixels have class ids >= {len(names)}, but class_names "
                f"lists only {names}; the model's outputs and its metadata disagree: re-export it"
            )
        if m == 0:
            return Detections.empty((h, w))
        sx, sy = segmap.scale
        div = area.astype(np.float64)
        # Pixel x covers [x, x + 1): its centre is x + 0.5, which scales to source pixels exactly.
        centroid = (sums[:, :2] / div[:, None] + 0.5) * np.array([sx, sy])
        return Detections(
            xyxy=(box * np.array([sx, sy, sx, sy])).astype(np.float32),
            area=(div * (sx * sy)).astype(np.float32),
            centroid=centroid.astype(np.float32),
            confidence=np.clip(sums[:, 2] / div, 0.0, 1.0).astype(np.float32),
            class_id=class_id,
            instance_map=labels,
        )
