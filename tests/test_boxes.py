"""Boxes stage: table-driven cases, property tests against scipy.ndimage.label, purity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import BoxesConfig
from stream.stages.boxes import (
    BoxExtractor,
    Scratch,
    components_with_stats,
    label_components,
    region_stats,
)
from stream.types import SegMap

NAMES = ("background", "item", "boundary")


def cfg(  # noqa: PLR0917
    min_area_frac: float = 0.0,
    connectivity: int = 8,
    split_touching: bool = True,
    boundary_reach: int = 1000,
    weak_boundary: float = 0.0,
    weak_boundary_area: float = 0.0,
) -> BoxesConfig:
    return BoxesConfig(
        min_area_frac=min_area_frac,
        connectivity=connectivity,
        split_touching=split_touching,
        boundary_reach=boundary_reach,
        weak_boundary=weak_boundary,
        weak_boundary_area=weak_boundary_area,
    )


def grid(rows: str) -> np.ndarray:
    """'01 10' -> uint8 [[0, 1], [1, 0]] (rows separated by spaces)."""
    return np.array([[int(c) for c in r] for r in rows.split()], np.uint8)


def segmap(
    classes: np.ndarray,
    names: tuple[str, ...] = NAMES,
    source_size: tuple[int, int] | None = None,
    conf: np.ndarray | None = None,
) -> SegMap:
    h, w = classes.shape
    if conf is None:
        conf = np.full((h, w), 0.5, np.float32)
    return SegMap(classes=classes, confidence=conf, class_names=names, source_size=source_size or (w, h))


def boxes_of(det) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    return sorted(tuple(int(v) for v in b) + (int(a),) for b, a in zip(det.xyxy, det.area, strict=True))


# name, map, config, class names, expected sorted (x1, y1, x2, y2, area) at scale 1
CASES = [
    ("empty", grid("00000 00000 00000 00000"), cfg(), NAMES, []),
    ("single pixel", grid("000 001 000"), cfg(), NAMES, [(2, 1, 3, 2, 1)]),
    ("diagonal, 4-connected", grid("10 01"), cfg(connectivity=4), NAMES, [(0, 0, 1, 1, 1), (1, 1, 2, 2, 1)]),
    ("diagonal, 8-connected", grid("10 01"), cfg(connectivity=8), NAMES, [(0, 0, 2, 2, 2)]),
    ("touching, boundary between", grid("112211 112211 112211"), cfg(), NAMES, [(0, 0, 3, 3, 9), (3, 0, 6, 3, 9)]),
    ("touching, split off", grid("112211 112211 112211"), cfg(split_touching=False), NAMES, [(0, 0, 6, 3, 18)]),
    ("touching, no boundary class", grid("1111 1111"), cfg(), ("background", "item"), [(0, 0, 4, 2, 8)]),
    ("rim only, no seed", grid("0000 0220 0000"), cfg(), NAMES, [(1, 1, 3, 2, 2)]),
    ("rim grows around seed", grid("22222 21112 22222"), cfg(), NAMES, [(0, 0, 5, 3, 15)]),
    (
        "min area drops speck",
        grid("1000000000 0000000000 0000111000 0000111000 0000111000"),
        cfg(min_area_frac=0.1),
        NAMES,
        [(4, 2, 7, 5, 9)],
    ),
    ("min area drops all", grid("100 000"), cfg(min_area_frac=0.5), NAMES, []),
    ("non-square tall", grid("1 1 0 1 1 1 0"), cfg(), NAMES, [(0, 0, 1, 2, 2), (0, 3, 1, 6, 3)]),
    ("non-square wide, 9 px", grid("110000111 000000000"), cfg(), NAMES, [(0, 0, 2, 1, 2), (6, 0, 9, 1, 3)]),
]


@pytest.mark.parametrize(("name", "classes", "config", "names", "want"), CASES, ids=[c[0] for c in CASES])
def test_cases(
    name: str, classes: np.ndarray, config: BoxesConfig, names: tuple[str, ...], want: list[tuple[int, ...]]
) -> None:
    det = BoxExtractor(config).extract(segmap(classes, names))
    assert boxes_of(det) == want
    assert det.instance_map.shape == classes.shape
    # instance_map value i + 1 is row i, with exactly that box and area
    for i in range(len(det)):
        ys, xs = np.nonzero(det.instance_map == i + 1)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(det.xyxy[i].astype(int))
        assert len(xs) == det.area[i]
    assert det.instance_map.max(initial=0) == len(det)


def test_scaled_to_source_pixels() -> None:
    classes = np.zeros((4, 8), np.uint8)
    classes[1, 2:4] = 1  # map pixels x 2..3, y 1
    conf = np.zeros((4, 8), np.float32)
    conf[1, 2], conf[1, 3] = 0.2, 0.6
    det = BoxExtractor(cfg()).extract(segmap(classes, source_size=(32, 12), conf=conf))  # sx 4, sy 3
    np.testing.assert_allclose(det.xyxy, [[8, 3, 16, 6]])
    np.testing.assert_allclose(det.area, [2 * 12])
    np.testing.assert_allclose(det.centroid, [[(2.5 + 0.5) * 4, (1 + 0.5) * 3]])
    np.testing.assert_allclose(det.confidence, [0.4], rtol=1e-6)
    assert det.class_id.tolist() == [1]


def test_class_id_is_majority_item_class_found_by_name() -> None:
    names = ("apple", "boundary", "background", "pear")  # ids deliberately not 0/1/2
    classes = np.full((3, 7), 2, np.uint8)
    classes[:, 0:3] = [[0, 0, 3], [0, 1, 3], [0, 0, 0]]
    classes[:, 4:7] = 1  # all rim: keeps the rim's class
    det = BoxExtractor(cfg()).extract(segmap(classes, names))
    assert det.class_id.tolist() == [0, 1]
    assert boxes_of(det) == [(0, 0, 3, 3, 9), (4, 0, 7, 3, 9)]


@pytest.mark.parametrize(
    ("names", "classes", "match"),
    [
        (("item", "boundary"), grid("01"), "background"),
        (NAMES, grid("03"), "class ids >= 3"),
    ],
)
def test_errors_say_what_was_expected(names: tuple[str, ...], classes: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BoxExtractor(cfg()).extract(segmap(classes, names))


def test_bad_connectivity_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 4 or 8"):
        label_components(np.ones((2, 2), bool), 6)


# ---- property tests against scipy.ndimage.label ----

masks = st.builds(
    lambda seed, h, w, p: np.random.default_rng(seed).random((h, w)) < p,
    st.integers(0, 2**32 - 1),
    st.integers(1, 24),
    st.integers(1, 40),
    st.floats(0.0, 1.0),
)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images split the pixels the same way (0 = background in both)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def scipy_stats(labels: np.ndarray, n: int) -> list[tuple[float, ...]]:
    out = []
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        out.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, len(xs), round(xs.mean(), 6), round(ys.mean(), 6)))
    return sorted(out)


def our_stats(c) -> list[tuple[float, ...]]:  # type: ignore[no-untyped-def]
    return sorted(
        (*(int(v) for v in b), int(a), round(float(cx), 6), round(float(cy), 6))
        for b, a, (cx, cy) in zip(c.xyxy, c.area, c.centroid, strict=True)
    )


@pytest.mark.parametrize("connectivity", [4, 8])
@settings(max_examples=60, deadline=None)
@given(mask=masks)
def test_matches_scipy_label(connectivity: int, mask: np.ndarray) -> None:
    ref, n_ref = ndi.label(mask, ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2))
    comps = components_with_stats(mask, connectivity)
    assert len(comps) == n_ref
    assert same_partition(comps.labels, ref)
    assert our_stats(comps) == scipy_stats(ref, n_ref)
    assert our_stats(region_stats(ref, n_ref)) == our_stats(comps)


class_maps = st.builds(
    lambda seed, h, w: np.random.default_rng(seed).choice(3, size=(h, w), p=[0.4, 0.35, 0.25]).astype(np.uint8),
    st.integers(0, 2**32 - 1),
    st.integers(1, 20),
    st.integers(1, 33),
)


@pytest.mark.parametrize("connectivity", [4, 8])
@settings(max_examples=40, deadline=None)
@given(classes=class_maps)
def test_split_refines_plain_labelling(connectivity: int, classes: np.ndarray) -> None:
    split = BoxExtractor(cfg(connectivity=connectivity)).extract(segmap(classes))
    plain = BoxExtractor(cfg(connectivity=connectivity, split_touching=False)).extract(segmap(classes))
    fg = classes > 0
    # every foreground pixel is in exactly one item, in both modes
    assert np.array_equal(split.instance_map > 0, fg) and np.array_equal(plain.instance_map > 0, fg)
    # splitting only cuts plain components, never joins them
    pairs = np.unique(np.stack([split.instance_map[fg], plain.instance_map[fg]]), axis=1)
    assert pairs.shape[1] == len(split) >= len(plain)
    # item pixels connected through item pixels alone stay together
    seeds, n_seeds = ndi.label(classes == 1, ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2))
    seed_pairs = np.unique(np.stack([seeds[seeds > 0], split.instance_map[seeds > 0]]), axis=1)
    assert seed_pairs.shape[1] == n_seeds
    assert boxes_of(split) == sorted(
        tuple(int(v) for v in b) + (int(a),)
        for b, a in zip(
            region_stats(split.instance_map, len(split)).xyxy,
            region_stats(split.instance_map, len(split)).area,
            strict=True,
        )
    )


# ---- purity and scratch reuse ----


def test_inputs_are_not_mutated() -> None:
    rng = np.random.default_rng(7)
    classes = rng.choice(3, size=(48, 64), p=[0.5, 0.3, 0.2]).astype(np.uint8)
    conf = rng.random((48, 64), dtype=np.float32)
    before = classes.copy(), conf.copy()
    classes.flags.writeable = False  # a write from the kernel would now fail outright
    conf.flags.writeable = False
    sm = segmap(classes, conf=conf)
    det = BoxExtractor(cfg(min_area_frac=0.01)).extract(sm)
    assert len(det) > 0
    assert np.array_equal(sm.classes, before[0]) and np.array_equal(sm.confidence, before[1])
    mask = rng.random((30, 41)) < 0.4
    mask_before = mask.copy()
    components_with_stats(mask, 8, confidence=conf[:30, :41])
    assert np.array_equal(mask, mask_before)


def test_scratch_reuse_does_not_leak_between_maps() -> None:
    rng = np.random.default_rng(3)
    big = rng.choice(3, size=(64, 80), p=[0.3, 0.4, 0.3]).astype(np.uint8)
    small = rng.choice(3, size=(16, 24), p=[0.3, 0.4, 0.3]).astype(np.uint8)
    reused = BoxExtractor(cfg())
    reused.extract(segmap(big))
    a = reused.extract(segmap(small))
    b = BoxExtractor(cfg()).extract(segmap(small))
    assert np.array_equal(a.instance_map, b.instance_map) and np.array_equal(a.xyxy, b.xyxy)
    scratch = Scratch()
    components_with_stats(big > 0, scratch=scratch)
    assert np.array_equal(components_with_stats(small > 0, scratch=scratch).labels, label_components(small > 0)[0])


@pytest.mark.parametrize(("reach", "n_items"), [(1000, 1), (2, 2)])
def test_thin_all_boundary_item_touching_a_big_one(reach: int, n_items: int) -> None:
    """A thin item that is all boundary (a banana at low resolution) touching a big item: with an
    unlimited reach the big item swallows it; with a short reach it stays an item of its own."""
    classes = np.zeros((12, 20), np.uint8)
    classes[2:10, 2:9] = 2  # the big item's rim...
    classes[3:9, 3:8] = 1  # ...around its interior
    classes[5:7, 9:19] = 2  # a thin item, all rim, touching the big one's right edge
    seg = SegMap(classes, np.ones(classes.shape, np.float32), NAMES, (20, 12))
    d = BoxExtractor(cfg(boundary_reach=reach)).extract(seg)
    assert len(d) == n_items
    if n_items == 2:
        assert sorted(d.xyxy[:, 2].tolist()) == [10.0, 19.0]  # big item keeps its rim (+ 1 px reach)


def _panel_item() -> np.ndarray:
    """One item (rim 2, interior 1) with a printed panel inside that the segmenter outlined."""
    classes = np.zeros((20, 24), np.uint8)
    classes[2:18, 2:22] = 2
    classes[3:17, 3:21] = 1
    classes[6:13, 8:16] = 2  # the panel's outline...
    classes[7:12, 9:15] = 1  # ...around its own interior
    return classes


@pytest.mark.parametrize(("share", "n_items"), [(0.5, 1), (0.0, 2)])
def test_fragment_enclosed_by_an_item_joins_it(share: float, n_items: int) -> None:
    """A panel outlined inside an item is a fragment of it, not an item: it joins its host (unless
    merging is off), and the joined item covers both, with raster-ordered labels 1..n."""
    classes = _panel_item()
    d = BoxExtractor(cfg(), enclosed_share=share).extract(segmap(classes))
    assert len(d) == n_items
    assert np.array_equal(d.instance_map > 0, classes > 0)
    assert d.instance_map.max() == n_items
    if n_items == 1:
        assert tuple(d.xyxy[0].astype(int)) == (2, 2, 22, 18) and d.area[0] == 16 * 20


def _capped_item(boundary_conf: float) -> tuple[np.ndarray, np.ndarray]:
    """A body (rim 2, interior 1) with a small cap on its top side, the line between them drawn as
    boundary at ``boundary_conf``; the outer rims at 0.9 and item pixels at 0.9 (body) / 0.6 (cap)."""
    classes = np.zeros((24, 16), np.uint8)
    conf = np.full(classes.shape, 0.9, np.float32)
    classes[6:22, 2:14] = 2  # the body
    classes[7:21, 3:13] = 1
    classes[1:7, 5:11] = 2  # the cap, sharing the body's top rim row
    classes[2:6, 6:10] = 1
    conf[2:6, 6:10] = 0.6
    conf[5:8, 5:11] = boundary_conf  # the cap's bottom rim and the body's top rim: their contact
    return classes, conf


@pytest.mark.parametrize(
    ("boundary_conf", "weak", "area", "n_items"),
    [(0.5, 0.78, 0.3, 1), (0.9, 0.78, 0.3, 2), (0.5, 0.0, 0.3, 2), (0.5, 0.78, 0.0, 2), (0.5, 0.78, 0.05, 2)],
)
def test_small_component_behind_a_weak_boundary_joins_its_neighbour(
    boundary_conf: float, weak: float, area: float, n_items: int
) -> None:
    """A cap cut off by an unsure boundary joins its body; a confident boundary keeps it apart, and
    so does either key at 0 or a cap bigger than weak_boundary_area of the body."""
    classes, conf = _capped_item(boundary_conf)
    boxes = BoxExtractor(cfg(boundary_reach=2, weak_boundary=weak, weak_boundary_area=area))
    d = boxes.extract(segmap(classes, conf=conf))
    assert len(d) == n_items
    if n_items == 1:
        assert tuple(d.xyxy[0].astype(int)) == (2, 1, 14, 22)
        inner = conf[(classes == 1) & (d.instance_map == 1)]
        assert d.confidence[0] == pytest.approx(float(inner.mean()))  # over body and cap's item pixels


@pytest.mark.parametrize("size", [6, 20])
def test_confidence_is_the_mean_over_item_class_pixels(size: int) -> None:
    """The boundary band an item grows back into does not count towards its confidence, so a small
    item and a big one with the same pixel confidences get the same; an item that is all boundary
    gets the mean over all its pixels."""
    classes = np.zeros((size + 12, size + 12), np.uint8)
    conf = np.zeros(classes.shape, np.float32)
    classes[2 : 2 + size, 2 : 2 + size] = 2
    conf[2 : 2 + size, 2 : 2 + size] = 0.5  # the rim, drawn unsure
    classes[3 : 1 + size, 3 : 1 + size] = 1
    conf[3 : 1 + size, 3 : 1 + size] = 0.9
    classes[-3:-1, -3:-1] = 2  # a speck that is all boundary, beyond boundary_reach of the item
    conf[-3:-1, -3:-1] = 0.7
    d = BoxExtractor(cfg(min_area_frac=0.0, boundary_reach=1)).extract(segmap(classes, conf=conf))
    assert len(d) == 2
    np.testing.assert_allclose(d.confidence, [0.9, 0.7], rtol=1e-6)


def test_touching_items_side_by_side_stay_apart_when_merging() -> None:
    """Two items that share a whole side (and a small one against a big one) are not fragments."""
    classes = np.zeros((16, 30), np.uint8)
    for x0, x1, y0, y1 in ((1, 11, 2, 14), (11, 21, 2, 14), (21, 25, 5, 9)):
        classes[y0:y1, x0:x1] = 2
        classes[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = 1
    d = BoxExtractor(cfg(boundary_reach=2), enclosed_share=0.5).extract(segmap(classes))
    assert len(d) == 3
