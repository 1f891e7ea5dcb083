"""The segment stage (contract, shapes, resizing), the shipped segmenter, and eval_segment's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from stream.config import load_config
from stream.eval.segment import (
    eval_segment,
    format_table,
    match_instances,
    overlap_matrix,
    touching_pairs,
    upsample_nearest,
)
from stream.stages.onnx_model import ModelError, load_model, resolve_model
from stream.stages.segment import Segmenter
from stream.synthetic.scene import CheckoutScene

META = {
    "name": "fake-segmenter",
    "version": "0",
    "input_size": "[8, 12]",
    "class_names": '["background", "item", "boundary"]',
}


def _fake_segmenter(
    path: Path, *, input_name: str = "images", meta: dict[str, str] | None = None, size: tuple[int, int] = (8, 12)
) -> Path:
    """classes = 1 where the mean of the pixel's channels > 127; confidence = mean / 255."""
    h, w = size
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Greater", ["m", "thr"], ["g"]),
        helper.make_node("Cast", ["g"], ["classes"], to=TensorProto.UINT8),
        helper.make_node("Div", ["m", "full"], ["confidence"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fake",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", h, w, 3])],
        [
            helper.make_tensor_value_info("classes", TensorProto.UINT8, ["N", h, w]),
            helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N", h, w]),
        ],
        [
            helper.make_tensor("thr", TensorProto.FLOAT, [], [127.0]),
            helper.make_tensor("full", TensorProto.FLOAT, [], [255.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (META if meta is None else meta).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path


def _cfg(model_path: Path | str):  # type: ignore[no-untyped-def]
    return load_config(overrides={"segment.model.path": str(model_path), "segment.model.provider": "cpu"})


@pytest.fixture
def fake(tmp_path: Path) -> Segmenter:
    return Segmenter(_cfg(_fake_segmenter(tmp_path / "fake.onnx")).segment)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_name": "pixels"}, "expected one input 'images'"),
        ({"meta": {k: v for k, v in META.items() if k != "class_names"}}, "lacks segmenter metadata"),
        ({"meta": {**META, "input_size": "[8]"}}, "is not \\[height, width\\]"),
        ({"meta": {**META, "class_names": '["item", "background"]'}}, "'background' first"),
        ({"meta": {**META, "input_size": "[16, 12]"}}, "disagrees with metadata"),
    ],
)
def test_contract_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = _fake_segmenter(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(ModelError, match=match):
        Segmenter(_cfg(path).segment)


def test_wrong_outputs_are_a_contract_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])],
        "id",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, ["N", 8, 8, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "id.onnx"))
    with pytest.raises(ModelError, match="expected outputs classes"):
        Segmenter(_cfg(tmp_path / "id.onnx").segment)


@pytest.mark.parametrize(
    "shape",
    [(8, 12, 3), (480, 640, 3), (3, 5, 3), (100, 60, 3)],
)
def test_segmap_shapes(fake: Segmenter, shape: tuple[int, int, int]) -> None:
    seg = fake.segment(np.full(shape, 200, np.uint8))
    assert seg.classes.shape == (8, 12) and seg.classes.dtype == np.uint8
    assert seg.confidence.shape == (8, 12) and seg.confidence.dtype == np.float32
    assert seg.source_size == (shape[1], shape[0])
    assert seg.class_names == ("background", "item", "boundary")
    assert (seg.classes == 1).all() and np.allclose(seg.confidence, 200 / 255)


def test_batch_empty_first_then_matches_single(fake: Segmenter) -> None:
    assert fake.segment_batch([]) == []
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)]
    batch = fake.segment_batch(images)
    for im, got in zip(images, batch, strict=True):
        one = fake.segment(im)
        assert np.array_equal(one.classes, got.classes) and got.source_size == (im.shape[1], im.shape[0])


def test_resize_is_area_average(fake: Segmenter) -> None:
    """A left-bright/right-dark frame at 4x the model size keeps the split exactly."""
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = 255
    seg = fake.segment(img)
    assert (seg.classes[:, :6] == 1).all() and (seg.classes[:, 6:] == 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
    ],
)
def test_bad_images_are_rejected(fake: Segmenter, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        fake.segment(bad)


def test_identity_and_input_size(fake: Segmenter) -> None:
    assert fake.input_size == (8, 12)
    assert fake.identity["name"] == "fake-segmenter" and len(fake.identity["sha256"]) == 64


# --------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped() -> Segmenter:
    return Segmenter(load_config(overrides={"segment.model.provider": "cpu"}).segment)


def test_shipped_model_contract(shipped: Segmenter) -> None:
    model = load_model(load_config(overrides={"segment.model.provider": "cpu"}).segment.model)
    assert model.name == "checkout-segmenter"
    assert json.loads(model.metadata["class_names"]) == ["background", "item", "boundary"]
    assert shipped.input_size == tuple(json.loads(model.metadata["input_size"]))
    assert resolve_model("builtin:segmenter").stat().st_size > 100_000


def test_shipped_model_segments_a_scene(shipped: Segmenter) -> None:
    """Unseen scene seed: foreground IoU against the scene's own instance map."""
    scene = CheckoutScene(seed=777, duration_s=20)
    inter = union = 0
    for i in (150, 330, 510):
        f = scene.render(i)
        seg = shipped.segment(f.image)
        pred = upsample_nearest(seg.classes, (f.image.shape[1], f.image.shape[0])) > 0
        truth = f.instance_map > 0
        inter += int((pred & truth).sum())
        union += int((pred | truth).sum())
    assert inter / union > 0.85


# --------------------------------------------------------------------------- eval_segment metrics


def test_touching_pairs_table() -> None:
    cases = [
        (np.zeros((4, 4), np.int64), set()),
        (np.array([[1, 1, 0, 2]]), set()),
        (np.array([[1, 2]]), {(1, 2)}),
        (np.array([[1, 0], [0, 2]]), {(1, 2)}),  # diagonal neighbours touch (8-connectivity)
        (np.array([[0, 2], [1, 0]]), {(1, 2)}),
        (np.array([[1, 2, 3]]), {(1, 2), (2, 3)}),
    ]
    for mask, expected in cases:
        assert touching_pairs(mask) == expected


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_overlap_matrix_matches_brute_force(h: int, w: int, data: st.DataObject) -> None:
    cells = st.lists(st.integers(0, 3), min_size=h * w, max_size=h * w)
    truth = np.array(data.draw(cells)).reshape(h, w)
    pred = np.array(data.draw(cells)).reshape(h, w) * 5
    inter, t_ids, p_ids = overlap_matrix(truth, pred)
    for r, t in enumerate(t_ids):
        for c, p in enumerate(p_ids):
            assert inter[r, c] == int(((truth == t) & (pred == p)).sum())
    for t, p in match_instances(inter):
        a, b = truth == t_ids[t], pred == p_ids[p]
        assert (a & b).sum() / (a | b).sum() >= 0.5


# Integer scale factors: no pixel centre falls exactly between two model pixels (where rounding
# conventions may legitimately differ).
@pytest.mark.parametrize(
    ("src", "size"), [((1, 1), (3, 2)), ((3, 4), (8, 6)), ((5, 7), (21, 15)), ((48, 64), (640, 480))]
)
def test_upsample_nearest_matches_opencv(src: tuple[int, int], size: tuple[int, int]) -> None:
    labels = np.arange(src[0] * src[1], dtype=np.int32).reshape(src)
    ours = upsample_nearest(labels, size)
    ref = cv2.resize(labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST_EXACT).astype(np.int32)
    assert ours.shape == (size[1], size[0]) and np.array_equal(ours, ref)


def _write_set(root: Path, frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, (img, mask) in enumerate(frames):
        cv2.imwrite(str(root / "images" / f"f{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"f{i}.png"), mask.astype(np.uint16))
    return root / "images", root / "masks"


def test_eval_segment_missing_mask_is_named(tmp_path: Path) -> None:
    images, masks = _write_set(tmp_path, [(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)))])
    (masks / "f0.png").unlink()
    cfg = _cfg(_fake_segmenter(tmp_path / "fake.onnx"))
    with pytest.raises(FileNotFoundError, match="f0.png"):
        eval_segment(images, masks, cfg.segment, cfg.boxes, progress=False)


def test_eval_segment_on_scene_frames(tmp_path: Path) -> None:
    scene = CheckoutScene(seed=778, duration_s=20)
    frames = [(f.image, f.instance_map) for f in (scene.render(i) for i in (120, 300, 480))]
    images, masks = _write_set(tmp_path, frames)
    cfg = load_config(overrides={"segment.model.provider": "cpu"})
    on = eval_segment(images, masks, cfg.segment, cfg.boxes, split_touching=True, progress=False)
    off = eval_segment(images, masks, cfg.segment, cfg.boxes, split_touching=False, progress=False)
    assert on["n_images"] == 3 and on["split_touching"] and not off["split_touching"]
    for key in ("foreground_iou", "instance_precision", "instance_recall"):
        assert 0.0 <= on[key] <= 1.0
    assert on["foreground_iou"] > 0.8 and on["instance_recall"] > 0.5
    assert "foreground IoU" in format_table(on)
