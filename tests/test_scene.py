"""The synthetic checkout scene: deterministic, ground truth consistent with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from stream.synthetic.products import DEMO_PRODUCTS, product_sprite, render_packshot
from stream.synthetic.scene import CheckoutScene, SceneFrame, counter_texture, scene_length_frames


@pytest.mark.parametrize(("fps", "duration", "expected"), [(30.0, 0.01, 1), (30.0, 60.0, 1800), (25.0, 2.0, 50)])
def test_scene_length(fps: float, duration: float, expected: int) -> None:
    assert scene_length_frames(fps, duration) == expected
    assert CheckoutScene(fps=fps, duration_s=duration).scene_length_frames == expected


def test_empty_product_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one product"):
        CheckoutScene(products=[])


def test_unknown_product_names_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="demo-cereal"):
        product_sprite("demo-nothing")


@pytest.mark.parametrize("product", DEMO_PRODUCTS)
def test_every_product_renders(product: str) -> None:
    img, alpha = product_sprite(product)
    assert img.dtype == np.uint8 and img.shape[:2] == alpha.shape
    assert 0.3 < float((alpha > 0.5).mean()) <= 1.0
    shot = render_packshot(product, size=160)
    assert shot.shape == (160, 160, 3) and shot.dtype == np.uint8
    assert (shot[0] == 255).all(), "packshot border is white"
    assert (shot < 250).any(axis=2).mean() > 0.05, "the product is visible"
    assert not np.array_equal(render_packshot(product, seed=1), render_packshot(product, seed=0))


def test_products_look_different() -> None:
    means = np.array([render_packshot(p, 64).reshape(-1, 3).mean(0) for p in DEMO_PRODUCTS])
    d = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert (d + np.eye(len(DEMO_PRODUCTS)) * 1e3).min() > 1.0


@pytest.mark.parametrize("style", ["wood", "steel", "laminate", "belt"])
def test_counter_styles(style: str) -> None:
    tex = counter_texture(np.random.default_rng(0), 64, 48, style)
    assert tex.shape == (48, 64, 3) and tex.dtype == np.uint8 and tex.std() > 0.5


def _frames(scene: CheckoutScene, idx: list[int]) -> list[SceneFrame]:
    return [scene.render(i) for i in idx]


def test_deterministic_per_seed() -> None:
    idx = [0, 45, 300, 901]
    a = _frames(CheckoutScene(seed=3, duration_s=40), idx)
    b = _frames(CheckoutScene(seed=3, duration_s=40), idx)
    c = _frames(CheckoutScene(seed=4, duration_s=40), idx)
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(fa.image, fb.image) and np.array_equal(fa.instance_map, fb.instance_map)
        assert fa.items == fb.items
    assert any(not np.array_equal(fa.image, fc.image) for fa, fc in zip(a, c, strict=True))


def test_instance_map_matches_items() -> None:
    scene = CheckoutScene(seed=1, width=320, height=240, duration_s=30)
    seen_items, touching = 0, 0
    for f in _frames(scene, list(range(0, scene.n_frames, 15))):
        assert f.image.shape == (240, 320, 3) and f.instance_map.shape == (240, 320)
        assert f.instance_map.dtype == np.int32
        keys = {k for k, _, _ in f.items}
        assert keys == set(np.unique(f.instance_map)) - {0}
        for key, product, (x1, y1, x2, y2) in f.items:
            assert product in DEMO_PRODUCTS
            ys, xs = np.nonzero(f.instance_map == key)
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        seen_items += len(f.items)
        m = f.instance_map
        touching += int(((m[:, 1:] != m[:, :-1]) & (m[:, 1:] > 0) & (m[:, :-1] > 0)).any())
    assert seen_items > 20, "items appear over the scene"
    assert touching > 0, "some items touch"


def test_frames_iterates_in_order() -> None:
    frames = list(CheckoutScene(seed=0, width=160, height=120, duration_s=0.2).frames())
    assert [f.index for f in frames] == list(range(6))
