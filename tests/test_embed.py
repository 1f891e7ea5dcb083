"""The embed stage: letterbox geometry, the shipped embedder's output, and contract errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import ModelConfig
from stream.stages.embed import PAD_VALUE, Embedder, letterbox
from stream.stages.onnx_model import ModelError, _manifest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def model_cfg(path: str, tmp: Path | None = None) -> ModelConfig:
    return ModelConfig(
        path=path,
        provider="cpu",
        intra_op_threads=1,
        inter_op_threads=1,
        trt_cache_dir=str(tmp or "/tmp"),
        fp16=False,
        verify_checksum=True,
    )


shipped = pytest.mark.skipif("embedder" not in _manifest(), reason="no shipped embedder in stream/models")

# ------------------------------------------------------------------------------------ letterbox


@pytest.mark.parametrize(
    ("h", "w", "size", "content"),  # content: (rows, cols) of the resized image inside the square
    [
        (1, 1, 8, (8, 8)),
        (10, 10, 10, (10, 10)),
        (20, 10, 10, (10, 5)),
        (10, 40, 16, (4, 16)),
        (300, 100, 160, (160, 53)),
        (3, 500, 32, (1, 32)),  # never collapses to zero rows
    ],
)
def test_letterbox_keeps_aspect_and_pads_grey(h: int, w: int, size: int, content: tuple[int, int]) -> None:
    img = np.full((h, w, 3), 250, np.uint8)
    out = letterbox(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    rows, cols = np.nonzero((out != PAD_VALUE).any(axis=2))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == content
    # centred: the margins on either side differ by at most one pixel
    assert abs(rows.min() - (size - 1 - rows.max())) <= 1 and abs(cols.min() - (size - 1 - cols.max())) <= 1


def test_letterbox_does_not_mutate_its_input() -> None:
    img = np.arange(30 * 20 * 3, dtype=np.uint8).reshape(30, 20, 3) % 200
    before = img.copy()
    letterbox(img, 16)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (5, 5), (5, 5, 4)])
def test_letterbox_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        letterbox(np.zeros(shape, np.uint8), 16)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), size=st.integers(8, 224))
def test_letterbox_property_square_output_aspect_within_a_pixel(h: int, w: int, size: int) -> None:
    out = letterbox(np.full((h, w, 3), 255, np.uint8), size)
    assert out.shape == (size, size, 3)
    rows, cols = np.nonzero(out[..., 0] != PAD_VALUE)
    nh, nw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert max(nh, nw) == size
    assert abs(nh - h * size / max(h, w)) <= 1 and abs(nw - w * size / max(h, w)) <= 1


# ------------------------------------------------------------------------------- shipped model


@shipped
def test_shipped_embedder_output_contract() -> None:
    emb = Embedder(model_cfg("builtin:embedder"))
    assert emb.embed([]).shape == (0, emb.dim)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 90), (300, 120), (7, 7)]]
    out = emb.embed(crops)
    assert out.shape == (3, emb.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    # batching must not change a crop's vector
    np.testing.assert_allclose(emb.embed(crops[1:2])[0], out[1], atol=1e-4)
    assert set(emb.identity) == {"name", "version", "sha256"} and emb.identity["name"] == "checkout-embedder"
    assert emb.input_size == json.loads(emb.model.metadata["input_size"])


@shipped
def test_shipped_embedder_separates_different_items() -> None:
    """A red and a green crop must be further apart than two views of the same red crop."""
    emb = Embedder(model_cfg("builtin:embedder"))
    red = np.zeros((120, 80, 3), np.uint8)
    red[..., 2] = 200
    green = np.zeros((120, 80, 3), np.uint8)
    green[..., 1] = 200
    v = emb.embed([red, red[10:110, 5:75], green])
    assert v[0] @ v[1] > v[0] @ v[2]


# ----------------------------------------------------------------------------- contract errors


def _write(tmp: Path, name: str, io: tuple[list, list], nodes: list, meta: dict[str, str]) -> Path:
    graph = helper.make_graph(nodes, name, *io)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


GOOD_META = {"name": "x", "version": "1", "input_size": "8", "embedding_dim": "192", "normalisation": "{}"}


def _flatten_model(tmp: Path, name: str, in_name: str, in_type: int, meta: dict[str, str]) -> Path:
    inp = helper.make_tensor_value_info(in_name, in_type, ["N", 8, 8, 3])
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 192])
    nodes = [
        helper.make_node("Cast", [in_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["f"], ["embeddings"], axis=1),
    ]
    return _write(tmp, name, ([inp], [out]), nodes, meta)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("float_input", "not an embedder: expected one input 'crops' uint8"),
        ("wrong_input_name", "not an embedder"),
        ("no_metadata", "lacks embedder metadata"),
        ("size_mismatch", "disagrees with metadata input_size"),
    ],
)
def test_non_embedder_models_are_refused(tmp_path: Path, case: str, match: str) -> None:
    spec = {
        "float_input": ("crops", TensorProto.FLOAT, GOOD_META),
        "wrong_input_name": ("images", TensorProto.UINT8, GOOD_META),
        "no_metadata": ("crops", TensorProto.UINT8, {}),
        "size_mismatch": ("crops", TensorProto.UINT8, {**GOOD_META, "input_size": "16"}),
    }[case]
    path = _flatten_model(tmp_path, case, *spec)
    with pytest.raises(ModelError, match=match):
        Embedder(model_cfg(str(path), tmp_path))


def test_a_conforming_toy_model_is_accepted(tmp_path: Path) -> None:
    """The contract check is not so strict that it refuses a correct model (flatten of 8x8x3)."""
    path = _flatten_model(tmp_path, "toy", "crops", TensorProto.UINT8, GOOD_META)
    emb = Embedder(model_cfg(str(path), tmp_path))
    assert emb.dim == 192 and emb.input_size == 8
    assert emb.embed([np.zeros((4, 4, 3), np.uint8)]).shape == (1, 192)


@pytest.mark.skipif("segmenter" not in _manifest(), reason="no shipped segmenter")
def test_the_segmenter_is_not_an_embedder() -> None:
    with pytest.raises(ModelError, match="not an embedder"):
        Embedder(model_cfg("builtin:segmenter"))
