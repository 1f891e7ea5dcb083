"""Fakes for unit tests of logic (never for claims about the system)."""

from __future__ import annotations

import numpy as np

from stream.types import Detections, Frame, Match, SegMap


def frame(index: int, w: int = 160, h: int = 120, t: float | None = None) -> Frame:
    img = np.full((h, w, 3), 90, np.uint8)
    return Frame(img, index, float(index) / 30 if t is None else t, 1.7e9 + index / 30, "fake")


def detections(
    boxes: list[tuple[float, float, float, float]], conf: float = 0.9, map_shape: tuple[int, int] = (12, 16)
) -> Detections:
    n = len(boxes)
    xyxy = np.asarray(boxes, np.float32).reshape(n, 4)
    inst = np.zeros(map_shape, np.int32)
    return Detections(
        xyxy=xyxy,
        area=((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])).astype(np.float32),
        centroid=np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], 1).astype(np.float32)
        if n
        else np.zeros((0, 2), np.float32),
        confidence=np.full(n, conf, np.float32),
        class_id=np.ones(n, np.int32),
        instance_map=inst,
    )


class ScriptedDetector:
    """Segmenter + boxes fake: returns scripted detections per call (by frame index)."""

    def __init__(self, script: dict[int, list[tuple[float, float, float, float]]]) -> None:
        self.script = script
        self._next: int = 0

    def segment(self, image: np.ndarray) -> SegMap:
        i = self._next
        self._next += 1
        return SegMap(
            np.full((1, 1), i % 256, np.uint8),
            np.zeros((1, 1), np.float32),
            ("bg", "item"),
            (image.shape[1], image.shape[0]),
        )

    def extract(self, segmap: SegMap) -> Detections:
        return detections(self.script.get(self._next - 1, []))


class MeanColourEmbedder:
    """Embeds a crop as its normalised mean BGR colour (plus a constant so it is never zero)."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        if not crops:
            return np.zeros((0, 4), np.float32)
        v = np.array([[*c.reshape(-1, 3).mean(0), 40.0] for c in crops], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class BruteCatalog:
    """Exact search over named vectors, best product first."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.names = list(vectors)
        m = np.stack([vectors[n] for n in self.names]).astype(np.float32)
        self.m = m / np.linalg.norm(m, axis=1, keepdims=True)

    def search(self, vectors: np.ndarray, k: int) -> list[Match]:
        out = []
        for q in vectors:
            s = self.m @ q
            order = np.argsort(-s)[:k]
            out.append(Match(tuple(self.names[i] for i in order), tuple(float(s[i]) for i in order)))
        return out
