"""The segment stage: a frame -> per-pixel classes (background / item / boundary) at model size.

The ONNX graph holds the preprocessing, the argmax and the softmax confidence, so this stage only
resizes the frame to the model's input size and reads two arrays back. Boxes are upscaled later
(``SegMap.scale``), which keeps the per-frame work independent of the camera's resolution.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from stream.config import SegmentConfig
from stream.stages.onnx_model import LoadedModel, ModelError, check_io, load_model
from stream.types import SegMap

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUTS = (("classes", "tensor(uint8)"), ("confidence", "tensor(float)"))
REQUIRED_METADATA = ("name", "version", "input_size", "class_names")


def check_segmenter_contract(model: LoadedModel) -> tuple[tuple[int, int], tuple[str, ...]]:
    """Raise ModelError unless ``model`` is a checkout-stream segmenter; return ((H, W), class names)."""
    check_io(
        model,
        kind="segmenter",
        input_name=INPUT_NAME,
        input_shape="[N,H,W,3]",
        outputs=OUTPUTS,
        metadata=REQUIRED_METADATA,
        config_key="segment.model.path",
    )
    where = f"model {model.path.name}"
    size: Any = model.meta_json("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ModelError(f"{where}: metadata input_size={json.dumps(size)} is not [height, width]")
    names: Any = model.meta_json("class_names")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names) and names[0] == "background"):
        raise ModelError(f"{where}: metadata class_names={json.dumps(names)} must list names with 'background' first")
    shape = model.session.get_inputs()[0].shape
    if (
        len(shape) != 4
        or shape[3] != 3
        or any(isinstance(s, int) and s != want for s, want in zip(shape[1:3], size, strict=True))
    ):
        raise ModelError(f"{where}: input shape {shape} disagrees with metadata input_size={size} ([H, W])")
    return (size[0], size[1]), tuple(names)


class Segmenter:
    """Segments BGR frames of any size with the ONNX segmenter (input size from its metadata)."""

    def __init__(self, cfg: SegmentConfig, model: LoadedModel | None = None) -> None:
        self._model = model if model is not None else load_model(cfg.model)
        self._size, self._names = check_segmenter_contract(self._model)
        self._batch_fixed = self._model.session.get_inputs()[0].shape[0]
        log.info(
            "segmenter %s v%s, input %dx%d, classes %s",
            self._model.name,
            self._model.version,
            self._size[1],
            self._size[0],
            ",".join(self._names),
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input, as in its ``input_size`` metadata."""
        return self._size

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self._model.name, "version": self._model.version, "sha256": self._model.sha256}

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] > 0
            and image.shape[1] > 0
        ):
            found = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"segment: expected a uint8 HxWx3 BGR image, found {found}")
        h, w = self._size
        if image.shape[:2] == (h, w):
            return image
        # INTER_AREA averages when shrinking (no aliasing on textured counters); linear when enlarging.
        interp = cv2.INTER_AREA if image.shape[0] > h or image.shape[1] > w else cv2.INTER_LINEAR
        return cv2.resize(image, (w, h), interpolation=interp)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes, conf = self._model.run(["classes", "confidence"], {INPUT_NAME: batch})  # IO-bound on GPUs
        return classes, conf

    def segment(self, image: np.ndarray) -> SegMap:
        """One BGR frame (any size) -> its SegMap at the model's resolution."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: Sequence[np.ndarray]) -> list[SegMap]:
        """Several frames in one call (one run when the model takes a dynamic batch)."""
        if len(images) == 0:
            return []
        batch = np.stack([self._prepare(im) for im in images])
        if isinstance(self._batch_fixed, int):  # a fixed-batch model: run in chunks of that size
            step = self._batch_fixed
            parts = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
            classes = np.concatenate([p[0] for p in parts])
            conf = np.concatenate([p[1] for p in parts])
        else:
            classes, conf = self._run(batch)
        return [
            SegMap(
                classes=np.ascontiguousarray(classes[i], np.uint8),
                confidence=np.ascontiguousarray(conf[i], np.float32),
                class_names=self._names,
                source_size=(int(im.shape[1]), int(im.shape[0])),
            )
            for i, im in enumerate(images)
        ]


class _Job:
    __slots__ = ("image", "result", "error", "done")

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.result: SegMap | None = None
        self.error: BaseException | None = None
        self.done = False


class SegmentBatcher:
    """One segmenter shared by several lanes, whose frames are segmented in one model call when they
    arrive together (``segment.batch_window_ms``).

    The first lane to submit a frame leads a batch: it waits up to ``window_s`` for the others (at most
    ``max_batch`` frames; it stops waiting as soon as that many are in), runs ``segment_batch`` on
    them outside the lock and hands each lane its map. Frames that arrive meanwhile form the next
    batch. So a lone lane pays at most ``window_s`` per frame, and a lane that stopped (a dead camera)
    never holds the others up for longer than that. ``client()`` is what each lane's pipeline calls.
    """

    def __init__(self, segmenter: Any, window_s: float, max_batch: int) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"SegmentBatcher: window_s >= 0 and max_batch >= 1, found {window_s}, {max_batch}")
        self.segmenter = segmenter
        self.window_s = window_s
        self.max_batch = max_batch
        self.batches = 0  # model calls made
        self.frames = 0  # frames segmented
        self._cond = threading.Condition()
        self._pending: list[_Job] = []

    def client(self) -> BatchedSegmenter:
        return BatchedSegmenter(self)

    def segment(self, image: np.ndarray) -> SegMap:
        job = _Job(image)
        with self._cond:
            self._pending.append(job)
            if len(self._pending) > 1:  # a batch is forming: its leader runs it
                if len(self._pending) >= self.max_batch:
                    self._cond.notify_all()
                while not job.done:
                    self._cond.wait()
                return self._result(job)
            deadline = time.monotonic() + self.window_s
            while len(self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending, []
        try:
            maps: list[SegMap] = self.segmenter.segment_batch([j.image for j in batch])
            for j, m in zip(batch, maps, strict=True):
                j.result = m
        except Exception as exc:  # every lane of the batch sees the failure, as it would alone
            for j in batch:
                j.error = exc
        with self._cond:
            for j in batch:
                j.done = True
            self.batches += 1
            self.frames += len(batch)
            self._cond.notify_all()
        return self._result(job)

    @staticmethod
    def _result(job: _Job) -> SegMap:
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result


class BatchedSegmenter:
    """A lane's handle on a ``SegmentBatcher`` (``SegmenterLike``): ``segment`` submits the frame and
    returns its map; everything else (input_size, identity, ...) is the shared segmenter's."""

    def __init__(self, batcher: SegmentBatcher) -> None:
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batcher.segmenter, name)

    def segment(self, image: np.ndarray) -> SegMap:
        return self._batcher.segment(image)

    def segment_batch(self, images: Sequence[np.ndarray]) -> list[SegMap]:
        return list(self._batcher.segmenter.segment_batch(images))
