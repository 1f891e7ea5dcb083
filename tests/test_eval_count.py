"""eval count: known counts and must-not-be-item masks, with a fake segmenter and the real boxes stage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.config import BoxesConfig, load_config
from stream.eval.count import eval_count, find_images, format_table, parse_select, product_stages
from stream.stages.boxes import BoxExtractor
from stream.types import SegMap

NAMES = ("background", "item", "boundary")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),
        ("", []),
        ("5", [(5, 5)]),
        ("11-20,76-100", [(11, 20), (76, 100)]),
        (" 1-2 , 4 ", [(1, 2), (4, 4)]),
    ],
)
def test_parse_select(text: str | None, expected: list[tuple[int, int]]) -> None:
    assert parse_select(text) == expected


@pytest.mark.parametrize("text", ["a-b", "3-1", "1-", "x"])
def test_parse_select_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--select"):
        parse_select(text)


def _write(folder: Path, stem: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    cv2.imwrite(str(path), image)
    return path


def _fake_segment(image: np.ndarray) -> SegMap:
    """Class 1 wherever the red channel is bright: the test images say where items are."""
    classes = (image[..., 2] > 127).astype(np.uint8)
    return SegMap(
        classes=classes,
        confidence=np.ones(classes.shape, np.float32),
        class_names=NAMES,
        source_size=(image.shape[1], image.shape[0]),
    )


def _extract():  # type: ignore[no-untyped-def]
    boxes = BoxExtractor(
        BoxesConfig(
            min_area_frac=0.0,
            connectivity=8,
            split_touching=True,
            boundary_reach=4,
            weak_boundary=0.0,
            weak_boundary_area=0.0,
        )
    )
    return lambda _image, segmap: boxes.extract(segmap)


def _image(items: list[tuple[int, int, int, int]], size: tuple[int, int] = (40, 30)) -> np.ndarray:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    for x0, y0, x1, y1 in items:
        img[y0:y1, x0:x1, 2] = 255
    return img


def test_needs_a_truth(tmp_path: Path) -> None:
    _write(tmp_path, "1", _image([]))
    with pytest.raises(ValueError, match="--count"):
        eval_count([tmp_path], _fake_segment, _extract())


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no images"):
        find_images(tmp_path)


def test_known_count_recursive_with_groups(tmp_path: Path) -> None:
    _write(tmp_path / "a", "1", _image([]))  # 0 items
    _write(tmp_path / "a", "2", _image([(2, 2, 8, 8)]))  # 1 item
    _write(tmp_path / "b", "3", _image([(2, 2, 8, 8), (20, 20, 30, 28)]))  # 2 items
    r = eval_count([tmp_path], _fake_segment, _extract(), count=1, progress=False)
    assert r["n_images"] == 3
    assert r["exact_rate"] == pytest.approx(1 / 3)
    assert r["count_error"] == pytest.approx(2 / 3)
    assert r["count_histogram"] == {"0": 1, "1": 1, "2": 1}
    assert r["per_group_exact"] == {"a": 0.5, "b": 0.0}
    assert "exactly 1 item(s)" in format_table(r)


def test_mask_share_and_items_on_mask(tmp_path: Path) -> None:
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    # Image 1: an item of 6x6 = 36 px, the mask covers 10x10 = 100 px around it: 36% called item, and
    # the item lies wholly on the mask. Image 2: the mask is elsewhere: 0% and no item on it.
    _write(imgs, "1", _image([(2, 2, 8, 8)]))
    m1 = np.zeros((30, 40), np.uint8)
    m1[0:10, 0:10] = 255
    _write(masks, "1", m1)
    _write(imgs, "2", _image([(2, 2, 8, 8)]))
    m2 = np.zeros((30, 40), np.uint8)
    m2[20:30, 30:40] = 255
    _write(masks, "2", m2)
    _write(imgs, "3", _image([]))  # not selected
    _write(masks, "3", m2)
    r = eval_count([imgs], _fake_segment, _extract(), masks=[masks], select=parse_select("1-2"), progress=False)
    assert r["n_images"] == 2
    assert r["mask_pixels_called_item"] == pytest.approx((0.36 + 0.0) / 2)
    assert r["mask_pixels_called_item_pooled"] == pytest.approx(36 / 200)
    assert r["images_with_item_on_mask"] == pytest.approx(0.5)
    assert "exact_rate" not in r


def test_mask_of_another_size_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "images", "1", _image([]))
    _write(tmp_path / "masks", "1", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="must match"):
        eval_count([tmp_path / "images"], _fake_segment, _extract(), masks=[tmp_path / "masks"], progress=False)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "hands").is_dir(), reason="../shared/data/real/hands is absent")
def test_shipped_segmenter_on_real_hands_runs() -> None:
    cfg = load_config(overrides={"segment.model.provider": "cpu"})
    seg, ext, _ = product_stages(cfg.segment, cfg.boxes, cfg.track)
    r = eval_count(
        [DATA / "hands" / "desk" / "images"],
        seg,
        ext,
        masks=[DATA / "hands" / "desk" / "masks"],
        select=parse_select("76-100"),
        progress=False,
    )
    assert r["n_images"] == 25
    assert 0.0 <= r["mask_pixels_called_item"] <= 1.0
