"""The embed stage: item crops -> L2-normalised vectors, with the ONNX embedder.

``letterbox`` is the one crop-to-model-input function: the export side imports it for training, so
training and serving see identical pixels (keep aspect ratio, pad with neutral grey 127).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from stream.config import ModelConfig
from stream.stages.onnx_model import LoadedModel, ModelError, check_io, load_model

log = logging.getLogger(__name__)

PAD_VALUE = 127  # the network's zero after (x - 127) / 128: padding carries no signal
INPUT_NAME = "crops"
OUTPUT_NAME = "embeddings"
REQUIRED_METADATA = ("name", "version", "input_size", "embedding_dim", "normalisation")


def letterbox(img: np.ndarray, size: int) -> np.ndarray:
    """Resize ``img`` (uint8 HxWx3 BGR, any size >= 1x1) to fit ``size``x``size`` keeping its aspect
    ratio, centred on grey ``PAD_VALUE``. Returns a new uint8 [size, size, 3] array."""
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"letterbox expects a non-empty HxWx3 image, found shape {img.shape}")
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # INTER_AREA when shrinking avoids aliasing; linear when enlarging small crops.
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(img, dtype=np.uint8), (nw, nh), interpolation=interp)
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def check_embedder_contract(model: LoadedModel) -> tuple[int, int]:
    """Raise ModelError unless ``model`` is a checkout-stream embedder; return (input_size, dim)."""
    check_io(
        model,
        kind="embedder",
        input_name=INPUT_NAME,
        input_shape="[N,S,S,3]",
        outputs=((OUTPUT_NAME, "tensor(float)"),),
        metadata=REQUIRED_METADATA,
        config_key="classify.model.path",
    )
    where = f"model {model.path.name}"
    size, dim = _meta_int(model, "input_size"), _meta_int(model, "embedding_dim")
    shape = model.session.get_inputs()[0].shape
    if len(shape) != 4 or shape[3] != 3 or any(isinstance(s, int) and s != size for s in shape[1:3]):
        raise ModelError(f"{where}: input shape {shape} disagrees with metadata input_size={size}")
    return size, dim


def _meta_int(model: LoadedModel, key: str) -> int:
    value: Any = model.meta_json(key)
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        value = value[0]  # a square [S, S] is accepted too
    if not isinstance(value, int) or value < 1:
        raise ModelError(f"model {model.path.name}: metadata {key}={json.dumps(value)} is not a positive int")
    return value


class Embedder:
    """Embeds BGR crops of any size into float32 [N, D] unit vectors."""

    def __init__(self, cfg: ModelConfig, model: LoadedModel | None = None) -> None:
        self._model = model if model is not None else load_model(cfg)
        self._size, self._dim = check_embedder_contract(self._model)
        self._batch_fixed = self._model.session.get_inputs()[0].shape[0]

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def input_size(self) -> int:
        return self._size

    @property
    def identity(self) -> dict[str, str]:
        """What a catalog records to refuse vectors from another model."""
        return {"name": self._model.name, "version": self._model.version, "sha256": self._model.sha256}

    @property
    def model(self) -> LoadedModel:
        return self._model

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [N, D] L2-normalised embeddings of ``crops`` (uint8 HxWx3 BGR, any sizes)."""
        if len(crops) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        batch = np.stack([letterbox(c, self._size) for c in crops])
        if isinstance(self._batch_fixed, int):  # a model exported with a fixed batch: run one by one
            outs = [self._run(batch[i : i + 1]) for i in range(len(batch))]
            return np.concatenate(outs)
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._model.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]  # IO-bound on GPU providers
        if out.shape != (len(batch), self._dim):
            raise ModelError(
                f"model {self._model.path.name} returned shape {out.shape}, expected ({len(batch)}, {self._dim})"
            )
        return np.ascontiguousarray(out, dtype=np.float32)
