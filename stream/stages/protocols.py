"""The stage seams: what the pipeline and the runtime need of each stage, defined once.

Each stage is one class with one verb; these Protocols let tests pass fakes and let the composition
root (``stream.app``) swap implementations. Data types live in ``stream.types``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from stream.types import Detections, Frame, Label, Match, SegMap, Tracks


class SegmenterLike(Protocol):
    def segment(self, image: np.ndarray) -> SegMap: ...


class BoxesLike(Protocol):
    def extract(self, segmap: SegMap) -> Detections: ...


class TrackerLike(Protocol):
    def update(self, detections: Detections) -> Tracks: ...
    def reset(self) -> None: ...


class EmbedderLike(Protocol):
    """uint8 BGR crops of any size in, float32 [N, dim] L2-normalised vectors out."""

    @property
    def dim(self) -> int: ...

    @property
    def identity(self) -> dict[str, str]: ...

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class CatalogLike(Protocol):
    def search(self, vectors: np.ndarray, k: int) -> list[Match]: ...


class ClassifierLike(Protocol):
    def update(self, frame: Frame, detections: Detections, tracks: Tracks) -> dict[int, Label]: ...
    def label(self, track_id: int) -> Label | None: ...
    def reset(self) -> None: ...
