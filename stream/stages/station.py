"""A station profile and the gate it puts after the segmenter: items are what the empty station is not.

Onboarding (``checkout-stream station create``) reduces a few frames of the empty station to a
*reference*: the per-pixel median frame and the per-pixel noise (a robust spread of the empty frames),
both at the segmenter's input size. At run time each frame is compared with the reference after a
smooth gain correction (lighting drift through the day is a slowly varying multiplicative change, so
it is divided out), and pixels that stay within the noise are *unchanged*. A uniform darkening of the
reference (a shadow) is not a change either. The gate turns every segmenter item pixel that is not
near a changed pixel into background: fixtures (trays, scanners, scales, boxes, bags left on the
counter), printed panels and the counter's texture never become items, whatever the segmenter
thinks of them. Hands and arms change the picture, so keeping them out stays the segmenter's job.

Profile on disk (``DIR``): ``station.json`` (format, sizes, gate parameters, zones, model, validation
figures), ``reference.png`` (uint8 BGR median), ``noise.png`` (uint16, noise x 100), ``card.md``, and
optionally ``segmenter.onnx`` (a segmenter fitted to this station).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.types import SegMap

log = logging.getLogger(__name__)

FORMAT = "checkout-station/1"
PROFILE = "station.json"
REFERENCE = "reference.png"
NOISE = "noise.png"
NOISE_SCALE = 100.0  # noise.png holds noise * 100 as uint16
GAIN_GRID = (4, 3)  # (columns, rows) of the lighting-gain grid


@dataclass(frozen=True)
class GateParams:
    """How far a pixel must be from the reference to count as changed.

    k: changed when the difference exceeds ``k`` times the pixel's noise...
    floor: ...and at least ``floor`` grey levels (0-255) in some channel.
    shadow_spread: a pixel darker than the reference by the same factor in every channel (spread of
        the per-channel ratios at most this) is a shadow, not a change.
    reach: an item pixel survives when a changed pixel lies within this many model pixels.
    """

    k: float = 4.0
    floor: float = 14.0
    shadow_spread: float = 0.08
    reach: int = 2

    def __post_init__(self) -> None:
        for name, value, lo, hi in (
            ("k", self.k, 0.0, 100.0),
            ("floor", self.floor, 0.0, 255.0),
            ("shadow_spread", self.shadow_spread, 0.0, 1.0),
            ("reach", self.reach, 0, 64),
        ):
            if not lo <= value <= hi:
                raise ValueError(f"station gate {name}: expected {lo}..{hi}, found {value}")


@dataclass(frozen=True)
class Reference:
    """The empty station at the segmenter's input size.

    median: uint8 [h, w, 3] BGR, the per-pixel median of the empty frames.
    noise: float32 [h, w] grey levels, the per-pixel spread of the empty frames (1.4826 x MAD, max
        over channels, lightly smoothed).
    """

    median: np.ndarray
    noise: np.ndarray

    def __post_init__(self) -> None:
        if self.median.dtype != np.uint8 or self.median.ndim != 3 or self.median.shape[2] != 3:
            raise ValueError(
                f"Reference.median: expected uint8 [h, w, 3], found {self.median.dtype} {self.median.shape}"
            )
        if self.noise.shape != self.median.shape[:2]:
            raise ValueError(f"Reference.noise: expected shape {self.median.shape[:2]}, found {self.noise.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        h, w = self.median.shape[:2]
        return h, w


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A BGR frame at (height, width), resized as the Segmenter does (area when shrinking)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > h or image.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def build_reference(frames: list[np.ndarray], size: tuple[int, int]) -> Reference:
    """The reference of a few empty frames (any size, BGR uint8), at (height, width) ``size``."""
    if not frames:
        raise ValueError("station: no empty frames to build the reference from")
    stack = np.stack([resize_to(f, size) for f in frames]).astype(np.float32)
    median = np.median(stack, axis=0)
    if len(frames) > 1:
        mad = np.median(np.abs(stack - median), axis=0).max(axis=2) * 1.4826
    else:
        mad = np.zeros(size, np.float32)
    # A pixel's spread is shared with its neighbours: texture that moves a pixel (a belt) moves them all.
    noise = cv2.dilate(cv2.GaussianBlur(mad.astype(np.float32), (0, 0), 1.0), np.ones((3, 3), np.uint8))
    return Reference(median=median.round().clip(0, 255).astype(np.uint8), noise=noise.astype(np.float32))


def _gain(frame: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """float32 [h, w, 3]: a smooth per-channel gain that maps the reference's light onto the frame's:
    the median ratio in each cell of a coarse grid (robust to items covering part of a cell),
    interpolated bilinearly."""
    h, w = ref.shape[:2]
    cols, rows = GAIN_GRID
    cells = np.ones((rows, cols, 3), np.float32)
    ratio = (frame.astype(np.float32) + 4.0) / (ref.astype(np.float32) + 4.0)
    for r in range(rows):
        for c in range(cols):
            block = ratio[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols]
            cells[r, c] = np.median(block.reshape(-1, 3), axis=0)
    cells = np.clip(cells, 0.4, 2.5)
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_LINEAR)


def changed_mask(frame: np.ndarray, reference: Reference, params: GateParams) -> np.ndarray:
    """bool [h, w] at the reference's size: pixels of ``frame`` (any size, BGR) that are not the
    empty station (after the lighting gain; shadows excluded)."""
    raw = resize_to(frame, reference.size).astype(np.float32)
    img = cv2.GaussianBlur(raw, (3, 3), 0)
    ref = cv2.GaussianBlur(reference.median.astype(np.float32) * _gain(raw, reference.median), (3, 3), 0)
    diff = np.abs(img - ref).max(axis=2)
    changed = diff > np.maximum(params.k * reference.noise, params.floor)
    ratio = (img + 4.0) / (ref + 4.0)
    shadow = (ratio.max(axis=2) < 1.0) & (ratio.max(axis=2) - ratio.min(axis=2) <= params.shadow_spread)
    return np.asarray(changed & ~shadow)


def gate(segmap: SegMap, changed: np.ndarray, params: GateParams) -> SegMap:
    """``segmap`` with every non-background pixel farther than ``reach`` from a changed pixel set to
    background (class 0); the input is not modified."""
    if changed.shape != segmap.classes.shape:
        changed = cv2.resize(
            changed.astype(np.uint8), segmap.classes.shape[::-1], interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    near = changed
    if params.reach > 0:
        k = 2 * params.reach + 1
        near = cv2.dilate(changed.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    bg = segmap.class_names.index("background")
    classes = np.where(near, segmap.classes, np.uint8(bg)).astype(np.uint8)
    return SegMap(
        classes=classes, confidence=segmap.confidence, class_names=segmap.class_names, source_size=segmap.source_size
    )


@dataclass(frozen=True)
class Station:
    """A loaded station profile: its reference, gate parameters, zones and (optional) fitted model."""

    root: Path
    reference: Reference
    params: GateParams
    zones: tuple[dict[str, Any], ...] = ()
    model: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def apply(self, frame: np.ndarray, segmap: SegMap) -> SegMap:
        """The gate for one frame: the segmenter's map with the empty station's pixels removed."""
        return gate(segmap, changed_mask(frame, self.reference, self.params), self.params)


class StationError(ValueError):
    """A station folder that is missing, incomplete or of another format."""


def save_station(root: Path, reference: Reference, params: GateParams, info: dict[str, Any]) -> Path:
    """Write ``station.json``, ``reference.png`` and ``noise.png`` into ``root``; returns the json path."""
    root.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / REFERENCE), reference.median)
    cv2.imwrite(str(root / NOISE), (reference.noise * NOISE_SCALE).round().clip(0, 65535).astype(np.uint16))
    data = {"format": FORMAT, **info, "reference_size": [reference.size[1], reference.size[0]], "gate": asdict(params)}
    (root / PROFILE).write_text(json.dumps(data, indent=2) + "\n")
    return root / PROFILE


def load_station(root: Path) -> Station:
    """Read a station folder written by ``save_station`` (StationError when it is not one)."""
    root = Path(root)
    path = root / PROFILE
    if not path.is_file():
        raise StationError(
            f"{root} is not a station profile (no {PROFILE}); create one with "
            "`checkout-stream station create DIR --empty VIDEO_OR_IMAGES`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if data.get("format") != FORMAT:
        raise StationError(f"{path}: expected format {FORMAT!r}, found {data.get('format')!r}")
    median = cv2.imread(str(root / REFERENCE), cv2.IMREAD_COLOR)
    noise = cv2.imread(str(root / NOISE), cv2.IMREAD_UNCHANGED)
    if median is None or noise is None:
        raise StationError(f"{root}: {REFERENCE} or {NOISE} is missing or unreadable; re-run station create")
    try:
        params = GateParams(**data.get("gate", {}))
    except TypeError as exc:
        raise StationError(f"{path}: bad gate parameters ({exc})") from None
    model = data.get("model")
    model_path = root / model if model else None
    if model_path is not None and not model_path.is_file():
        raise StationError(f"{path}: names model {model!r}, but {model_path} is missing")
    return Station(
        root=root,
        reference=Reference(median=median, noise=noise.astype(np.float32) / NOISE_SCALE),
        params=params,
        zones=tuple(data.get("zones", ())),
        model=model_path,
        info=data,
    )


class GatedSegmenter:
    """A segmenter whose maps pass through a station's gate (``SegmenterLike``): the same verb, so the
    pipeline needs no change to run with a station."""

    def __init__(self, segmenter: Any, station: Station) -> None:
        self._inner = segmenter
        self._station = station

    @property
    def station(self) -> Station:
        return self._station

    def __getattr__(self, name: str) -> Any:  # input_size, class_names, identity... of the inner one
        return getattr(self._inner, name)

    def segment(self, image: np.ndarray) -> SegMap:
        return self._station.apply(image, self._inner.segment(image))

    def segment_batch(self, images: list[np.ndarray]) -> list[SegMap]:
        maps = self._inner.segment_batch(images)
        return [self._station.apply(im, m) for im, m in zip(images, maps, strict=True)]
