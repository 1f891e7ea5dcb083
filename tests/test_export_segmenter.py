"""Training composites (targets, determinism) and the segmenter export end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.composites import CompositeMaker, cutout, demo_sprites, hand_sprite, procedural_sprite, targets
from export.realism import Assets, RealisticMaker, capped, hard_cast_shadow, printed_panels, relight_skin

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _squares(*boxes: tuple[int, int, int, int], shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    inst = np.zeros(shape, np.int32)
    for k, (x0, y0, x1, y1) in enumerate(boxes, 1):
        inst[y0:y1, x0:x1] = k
    return inst


def _interiors_touch(classes: np.ndarray, inst: np.ndarray) -> bool:
    """Do interior pixels of two different instances touch (8-neighbours)?"""
    interior = np.where(classes == 1, inst, 0)
    p = np.pad(interior, 1)
    h, w = inst.shape
    a = p[1 : h + 1, 1 : w + 1]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        b = p[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
        if ((a > 0) & (b > 0) & (a != b)).any():
            return True
    return False


@pytest.mark.parametrize(
    ("inst", "n_item", "n_boundary"),
    [
        (_squares(), 0, 0),
        (_squares((5, 5, 15, 15)), 36, 64),  # 10x10: a 2-px rim (100 - 6x6) inside the outline
        (_squares((0, 0, 10, 10)), 64, 36),  # the image border is not an outline
        (_squares((5, 5, 15, 15), (15, 5, 25, 15)), 72, 128),  # touching: each keeps its own rim
    ],
)
def test_targets_table(inst: np.ndarray, n_item: int, n_boundary: int) -> None:
    classes = targets(inst)
    assert classes.dtype == np.uint8 and classes.shape == inst.shape
    assert int((classes == 1).sum()) == n_item and int((classes == 2).sum()) == n_boundary
    assert not _interiors_touch(classes, inst)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 29), st.integers(0, 19), st.integers(1, 12), st.integers(1, 12)), max_size=5))
def test_targets_properties(rects: list[tuple[int, int, int, int]]) -> None:
    inst = _squares(*[(x, y, x + w, y + h) for x, y, w, h in rects])
    classes = targets(inst)
    assert np.array_equal(classes > 0, inst > 0)
    assert not _interiors_touch(classes, inst)


def test_composites_deterministic_and_consistent() -> None:
    maker = CompositeMaker(demo_sprites(), (96, 128))
    a, b, c = maker.make(5), maker.make(5), maker.make(6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, c.image)
    for comp in (maker.make(s) for s in range(12)):
        assert comp.image.shape == (96, 128, 3) and comp.image.dtype == np.uint8
        assert comp.instances.dtype == np.int32 and comp.classes.dtype == np.uint8
        assert np.array_equal(comp.classes, targets(comp.instances))


def test_composites_have_touching_items() -> None:
    maker = CompositeMaker(demo_sprites(), (96, 128))
    touching = 0
    for s in range(30):
        inst = maker.make(s).instances
        touching += int(((inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)).any())
    assert touching >= 5


def _realistic_maker() -> RealisticMaker:
    rng = np.random.default_rng(0)
    tex = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    hand = hand_sprite(rng, 60)
    return RealisticMaker(demo_sprites(), Assets(hands=[hand], textures=tex), (96, 128), share=1.0)


def test_realistic_composites_deterministic_and_consistent() -> None:
    maker = _realistic_maker()
    a, b = maker.make(3), maker.make(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    for comp in (maker.make(s) for s in range(20)):
        assert comp.image.shape == (96, 128, 3) and comp.image.dtype == np.uint8
        assert np.array_equal(comp.classes, targets(comp.instances))
        counts = np.bincount(comp.instances.ravel())[1:]
        assert (counts[counts > 0] >= 12).all(), "no specks left as items"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_printed_panels_and_caps_keep_one_item(seed: int) -> None:
    """Print and caps change an item's pixels, never its shape: the item stays one item."""
    rng = np.random.default_rng(seed)
    img, alpha = procedural_sprite(rng)
    before = alpha.copy()
    for out in (printed_panels(rng, img, alpha), capped(rng, img, alpha)):
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img)
    assert np.array_equal(alpha, before)


def test_hard_cast_shadow_only_darkens_away_from_the_light() -> None:
    rng = np.random.default_rng(1)
    image = np.full((60, 80, 3), 200, np.uint8)
    alpha = np.zeros((20, 20), np.float32)
    alpha[2:18, 2:18] = 1.0
    hard_cast_shadow(rng, image, alpha, 30, 20, light=(1.0, 0.0))
    dark = image[..., 0] < 200
    assert dark.any() and (image <= 200).all()
    ys, xs = np.nonzero(dark)
    assert xs.mean() > 30 + 10, "the shadow falls away from the lamp (to the right here)"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_procedural_items_and_hands(seed: int) -> None:
    rng = np.random.default_rng(seed)
    img, alpha = procedural_sprite(rng)
    assert img.shape[:2] == alpha.shape and 0.3 < (alpha > 0.5).mean() <= 1.0
    img, alpha = hand_sprite(rng, 120)
    assert img.shape[1] == 120 and 0.1 < (alpha > 0.5).mean() < 0.9


def test_cutout_white_background() -> None:
    assert cutout(np.full((50, 50, 3), 255, np.uint8)) is None, "nothing on white"
    img = np.full((60, 80, 3), 255, np.uint8)
    cv2.rectangle(img, (20, 10), (59, 49), (30, 60, 200), -1)
    cv2.rectangle(img, (30, 20), (40, 30), (255, 255, 255), -1)  # a white patch inside: a hole to fill
    sprite = cutout(img)
    assert sprite is not None
    crop, alpha = sprite
    # The 3x3 pre-blur may add a 1-px halo around the 40x40 product.
    assert 40 <= crop.shape[0] <= 42 and 40 <= crop.shape[1] <= 42 and (alpha > 0.5).mean() > 0.9


# --------------------------------------------------------------------------- export (torch)


@pytest.mark.export
@pytest.mark.slow
def test_tiny_export_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import onnx  # noqa: PLC0415

    from export.__main__ import main  # noqa: PLC0415
    from export.segmenter import SegNet, export_wrapper, load_onnx_weights  # noqa: PLC0415
    from stream.config import load_config  # noqa: PLC0415
    from stream.stages.segment import Segmenter  # noqa: PLC0415
    from stream.synthetic.scene import CheckoutScene  # noqa: PLC0415

    t0 = time.monotonic()
    iconic = DATA / "grocery-store" / "iconic"  # absent elsewhere: then procedural items only
    assert main(["segmenter", "--out", str(tmp_path), "--tiny", "--iconic", str(iconic)]) == 0
    assert time.monotonic() - t0 < 60
    path = tmp_path / "segmenter.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["name"] == "checkout-segmenter"
    assert json.loads(meta["input_size"]) == [192, 256]
    assert json.loads(meta["class_names"]) == ["background", "item", "boundary"]
    assert json.loads(meta["normalisation"])["in_graph"] is True and meta["training_data"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["torch_vs_ort_class_agreement"] >= 0.99

    # The runtime accepts it, and the weights read back from the ONNX give the same classes.
    cfg = load_config(overrides={"segment.model.path": str(path), "segment.model.provider": "cpu"})
    seg = Segmenter(cfg.segment)
    frame = CheckoutScene(seed=9, duration_s=5).render(60).image
    frame = cv2.resize(frame, (256, 192), interpolation=cv2.INTER_AREA)
    import torch  # noqa: PLC0415

    net = load_onnx_weights(SegNet(pretrained=False), path)
    with torch.no_grad():
        ref = export_wrapper(net)(torch.from_numpy(frame[None]))[0][0].numpy()
    assert (seg.segment(frame).classes == ref).mean() >= 0.99


# --------------------------------------------------------------------------- eval sets (real photos)


def test_relit_hands_keep_their_shape_and_change_colour() -> None:
    rng = np.random.default_rng(0)
    img, alpha = hand_sprite(rng, 120)
    outs = [relight_skin(np.random.default_rng(s), img) for s in range(4)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == 4 and not any(np.array_equal(o, img) for o in outs)


@pytest.mark.parametrize("flag", ["--realism", "--metal", "--hands"])
def test_segmenter_rejects_a_share_out_of_range(tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from export.__main__ import main  # noqa: PLC0415

    assert main(["segmenter", "--out", str(tmp_path / "m"), flag, "1.5", "--tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag}: expected a share in [0, 1], found 1.5" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_segmenter_rejects_a_seed_that_reaches_the_validation_composites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.__main__ import main  # noqa: PLC0415

    assert main(["segmenter", "--out", str(tmp_path / "m"), "--seed", "10", "--tiny"]) == 2
    assert "--seed: expected 0-9, found 10" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_segment_sets_names_a_wrong_packshot_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.__main__ import main  # noqa: PLC0415

    assert main(["segment-sets", "--out", str(tmp_path / "sets"), "--iconic", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "sets").exists()


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "grocery-store" / "iconic").is_dir(), reason="../shared/data/grocery-store is absent")
def test_segment_sets_and_the_shipped_segmenter_on_real_packshots(tmp_path: Path) -> None:
    from export.__main__ import main  # noqa: PLC0415
    from tests.test_cli import cli  # noqa: PLC0415

    assert main(["segment-sets", "--out", str(tmp_path), "--heldout-images", "2"]) == 0
    for name, n_images, n_items in (("packshot_single", 12, 1), ("packshot_pairs", 12, 2), ("heldout", 2, None)):
        images = sorted(p.stem for p in (tmp_path / name / "images").glob("*.png"))
        masks = sorted((tmp_path / name / "masks").glob("*.png"))
        assert images == [p.stem for p in masks] and len(masks) == n_images
        if n_items:
            assert all(len(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))) == n_items + 1 for p in masks)

    # Real product photos the segmenter never saw, in touching pairs: the boundary class must split them.
    no_boundary = tmp_path / "no-boundary.yaml"
    no_boundary.write_text("boxes:\n  split_touching: false\n")
    pairs_dir = tmp_path / "packshot_pairs"
    pairs = ["--images", str(pairs_dir / "images"), "--masks", str(pairs_dir / "masks")]
    results = []
    for extra in ([], ["--config", str(no_boundary)]):
        proc = cli("eval", "segment", *pairs, "--json", *extra, timeout=300)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    split, merged = results
    assert split["n_touching_pairs"] >= 6 and split["split_touching"] and not merged["split_touching"]
    assert split["foreground_iou"] >= 0.85 and split["instance_recall"] >= 0.8, split
    assert split["touching_separated"] > merged["touching_separated"], (split, merged)


def _real(exact: float, hand_px: float) -> dict:
    return {
        "topdown_products": {"exact_rate": exact, "mean_count": 1.2, "max_count": 3},
        "hands_validation": {"mask_pixels_called_item": hand_px, "images_with_item_on_mask": 0.2},
        "belt": {"right_plain": 0.9, "right_station": 0.95},
    }


def test_card_cli_puts_real_and_scene_figures_side_by_side(tmp_path: Path) -> None:
    from export.segmenter_card import main  # noqa: PLC0415

    metrics = {"foreground_iou": 0.9, "boundary_iou": 0.6, "pixel_accuracy": 0.98}
    summary = {
        "config": {
            "size": [192, 256],
            "lr": 0.002,
            "encoder_lr_scale": 0.3,
            "class_weights": [1.0, 1.0, 3.0],
            "batch": 8,
            "realism": 0.6,
            "freeze_bn": True,
        },
        "onnx": {"fp32": {"latency_ms_1thread": 12.0, "checkout_scene": metrics}},
        "chosen": "fp32",
        "n_train_iconic": 69,
        "heldout_iconic": ["Lemon"],
        "steps": 10,
        "images_seen": 80,
        "minutes": 1.0,
        "final_loss": 0.1,
        "torch_vs_ort_class_agreement": 1.0,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "real.json").write_text(json.dumps({"shipped": _real(0.214, 0.678), "cand": _real(0.9, 0.05)}))
    scenes = {"recall": 0.988, "label_accuracy": 0.976, "total": {"duplicates": 8, "spurious": 3}}
    (tmp_path / "scenes.json").write_text(json.dumps(scenes))
    out = tmp_path / "card.md"
    args = ["--summary", str(tmp_path / "summary.json"), "--real", str(tmp_path / "real.json")]
    assert main([*args, "--scenes", f"shipped={tmp_path / 'scenes.json'}", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Fine-tuned from the previous shipped model" in text and "60% of composites are realistic" in text
    assert "| shipped | 21.4% (mean 1.20, max 3) | 67.8% | 20.0% | 90.0% / 95.0% | 98.8% / 8 / 3 / 97.6% |" in text
    assert "| cand | 90.0% (mean 1.20, max 3) | 5.0% | 20.0% | 90.0% / 95.0% | n/a |" in text


@pytest.mark.export
def test_soup_averages_the_exported_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The soup of two exported segmenters is the average of their folded (conv + batch norm) weights."""
    torch = pytest.importorskip("torch")
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    from export.__main__ import main  # noqa: PLC0415
    from export.onnx_utils import export_onnx  # noqa: PLC0415
    from export.segmenter import export_wrapper  # noqa: PLC0415
    from export.segnet import SegNet, load_onnx_weights  # noqa: PLC0415
    from export.soup import average  # noqa: PLC0415

    def conv_weights(path: Path) -> list[np.ndarray]:
        g = onnx.load(str(path)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        return [inits[n.input[1]] for n in g.node if n.op_type == "Conv"]

    def export(net: SegNet, path: Path) -> Path:
        example = np.zeros((1, 192, 256, 3), np.uint8)
        names = ["classes", "confidence"]
        return export_onnx(export_wrapper(net), example, path, input_name="images", output_names=names, metadata={})

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = SegNet(pretrained=False)
        for m in net.modules():  # batch norms that are not the identity, so folding matters
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
        paths.append(export(net, tmp_path / f"net{seed}.onnx"))
    nets = [load_onnx_weights(SegNet(pretrained=False), p) for p in paths]
    mid = export(average(nets[0], nets[1], 0.25), tmp_path / "mid.onnx")
    a, b, m = (conv_weights(p) for p in (*paths, mid))
    assert len(m) == len(a) > 10
    assert all(np.allclose(wm, 0.75 * wa + 0.25 * wb, atol=1e-6) for wa, wb, wm in zip(a, b, m, strict=True))
    assert not np.allclose(a[0], b[0])

    assert main(["soup", "--init", "x.onnx", "--tuned", str(tmp_path), "--weight", "1.5", "--out", str(tmp_path)]) == 2
    assert "--weight" in capsys.readouterr().err
