"""Catalog logic with a fake embedder: persistence, identity checks, incremental add, and search
against a brute-force numpy reference (per-product max cosine, top-k distinct products)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import CatalogConfig
from stream.stages.catalog import Catalog, CatalogError

DIM = 16


class FakeEmbedder:
    """A fixed random projection of the 4x4-downsampled crop: deterministic, image-dependent."""

    def __init__(self, sha: str = "a" * 64, dim: int = DIM) -> None:
        self.dim = dim
        self.identity = {"name": "fake-embedder", "version": "1", "sha256": sha}
        self._proj = np.random.default_rng(0).normal(size=(48, dim)).astype(np.float32)
        self.calls = 0

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self.calls += 1
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = np.stack([cv2.resize(c, (4, 4), interpolation=cv2.INTER_AREA).reshape(-1) for c in crops])
        v = (x.astype(np.float32) / 255 - 0.5) @ self._proj
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def cfg(index: str = "flat") -> CatalogConfig:
    return CatalogConfig(index=index, use_gpu=False, blas_threshold=20, item_views=False)


def random_images(seed: int, products: int, per: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {f"p{i:03d}": [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(per)] for i in range(products)}


def write_photos(root: Path, images: dict[str, list[np.ndarray]]) -> Path:
    for product, imgs in images.items():
        (root / product).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            cv2.imwrite(str(root / product / f"{i}.png"), img)
    return root


def brute_force(vectors: np.ndarray, owners: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    sims = queries @ vectors.T
    products = sorted(set(owners))
    out = []
    for row in sims:
        best = {p: max(row[i] for i, o in enumerate(owners) if o == p) for p in products}
        out.append(sorted(products, key=lambda p: -best[p])[:k])
    return out


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("layout", ["empty", "missing", "no_images"])
def test_build_without_photos_is_a_clear_error(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "photos"
    if layout != "missing":
        root.mkdir()
    if layout == "no_images":
        (root / "p0").mkdir()
        (root / "p0" / "notes.txt").write_text("not a photo")
    with pytest.raises(CatalogError, match="photo"):
        Catalog.build(root, FakeEmbedder(), cfg(), progress=False)


def test_corrupt_image_is_skipped_not_fatal(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "photos", random_images(1, 3, 2))
    (root / "p000" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    catalog = Catalog.build(root, FakeEmbedder(), cfg(), progress=False)
    assert catalog.info()["vectors"] == 6
    assert catalog.skipped == 1


def test_only_unreadable_images_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "p0").mkdir(parents=True)
    (root / "p0" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(CatalogError, match="no readable"):
        Catalog.build(root, FakeEmbedder(), cfg(), progress=False)


def test_load_of_a_non_catalog_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not a catalog"):
        Catalog.load(tmp_path, FakeEmbedder(), cfg())


@pytest.mark.parametrize("field", ["sha256", "version", "name"])
def test_catalog_from_another_embedder_is_refused(tmp_path: Path, field: str) -> None:
    catalog = Catalog.from_images(random_images(2, 3, 2), FakeEmbedder(), cfg())
    catalog.save(tmp_path / "cat")
    other = FakeEmbedder()
    other.identity = {**other.identity, field: other.identity[field] + "x"}
    with pytest.raises(CatalogError, match="built with embedder fake-embedder v1.*rebuild it"):
        Catalog.load(tmp_path / "cat", other, cfg())
    with pytest.raises(CatalogError, match="rebuild"):
        catalog.add(write_photos(tmp_path / "more", random_images(3, 1, 1)), other, progress=False)


def test_inconsistent_sidecar_is_refused(tmp_path: Path) -> None:
    Catalog.from_images(random_images(2, 3, 2), FakeEmbedder(), cfg()).save(tmp_path / "cat")
    sidecar = json.loads((tmp_path / "cat" / "catalog.json").read_text())
    sidecar["vector_product"] = sidecar["vector_product"][:-1]
    (tmp_path / "cat" / "catalog.json").write_text(json.dumps(sidecar))
    with pytest.raises(CatalogError, match="inconsistent"):
        Catalog.load(tmp_path / "cat", FakeEmbedder(), cfg())


# ------------------------------------------------------------------------------- behaviour


def test_empty_query_batch() -> None:
    catalog = Catalog.from_images(random_images(4, 3, 1), FakeEmbedder(), cfg())
    assert catalog.search(np.zeros((0, DIM), np.float32), 3) == []
    with pytest.raises(ValueError, match="float32"):
        catalog.search(np.zeros((2, DIM + 1), np.float32), 3)


def test_save_load_round_trip_gives_identical_results(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    root = write_photos(tmp_path / "photos", random_images(5, 6, 3))
    cv2.imwrite(str(root / "flat-product.jpg"), np.full((8, 8, 3), 200, np.uint8))  # ROOT/<product>.jpg
    built = Catalog.build(root, emb, cfg(), progress=False)
    built.save(tmp_path / "cat")
    loaded = Catalog.load(tmp_path / "cat", emb, cfg())
    q = emb.embed(random_images(6, 5, 1)["p000"] + random_images(7, 4, 1)["p001"])
    assert loaded.search(q, 4) == built.search(q, 4)
    assert loaded.products == built.products and "flat-product" in loaded.products
    manifest = json.loads((tmp_path / "cat" / "manifest.json").read_text())
    assert manifest["embedder"] == emb.identity
    assert manifest["count"] == 6 * 3 + 1 and manifest["dim"] == DIM and manifest["index"] == "flat"
    assert not list((tmp_path / "cat").glob("*.pkl"))


def test_add_without_rebuild(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    first = random_images(8, 4, 2)
    catalog = Catalog.build(write_photos(tmp_path / "a", first), emb, cfg(), progress=False)
    newcomer = {"zz-new": [np.full((8, 8, 3), (10, 200, 30), np.uint8)]}
    calls = emb.calls
    added = catalog.add(write_photos(tmp_path / "b", newcomer), emb, progress=False)
    assert added == 1 and emb.calls == calls + 1  # only the new photo was embedded
    assert catalog.info()["products"] == 5 and catalog.info()["vectors"] == 9
    assert catalog.search(emb.embed(newcomer["zz-new"]), 1)[0].products == ("zz-new",)
    catalog.save(tmp_path / "cat")
    assert Catalog.load(tmp_path / "cat", emb, cfg()).info()["vectors"] == 9


def test_k_beyond_the_product_count_returns_every_product_once() -> None:
    emb = FakeEmbedder()
    catalog = Catalog.from_images(random_images(9, 3, 5), emb, cfg())
    (m,) = catalog.search(emb.embed(random_images(10, 1, 1)["p000"]), 10)
    assert sorted(m.products) == ["p000", "p001", "p002"]
    assert list(m.scores) == sorted(m.scores, reverse=True)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), products=st.integers(1, 12), per=st.integers(1, 6), k=st.integers(1, 8))
def test_flat_search_matches_brute_force(seed: int, products: int, per: int, k: int) -> None:
    emb = FakeEmbedder()
    images = random_images(seed, products, per)
    catalog = Catalog.from_images(images, emb, cfg())
    owners = [p for p in sorted(images) for _ in images[p]]
    vectors = emb.embed([img for p in sorted(images) for img in images[p]])
    queries = emb.embed(random_images(seed + 1, 6, 1)["p000"] + random_images(seed + 2, 6, 1)["p001"])
    got = catalog.search(queries, k)
    want = brute_force(vectors, owners, queries, k)
    sims = queries @ vectors.T
    for m, w, row in zip(got, want, sims, strict=True):
        best = {p: max(row[i] for i, o in enumerate(owners) if o == p) for p in set(owners)}
        assert len(m.products) == len(set(m.products)) == min(k, products)
        # Each reported score is that product's best cosine, and the ranking equals the
        # reference's up to float ties (hence scores, not names, are compared position by position).
        np.testing.assert_allclose(m.scores, [best[p] for p in m.products], atol=1e-5)
        np.testing.assert_allclose(m.scores, [best[p] for p in w], atol=1e-5)


@pytest.mark.parametrize("index", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_nearest_product(tmp_path: Path, index: str) -> None:
    emb = FakeEmbedder()
    images = random_images(11, 40, 5)
    catalog = Catalog.from_images(images, emb, cfg(index))
    catalog.save(tmp_path / "cat")
    loaded = Catalog.load(tmp_path / "cat", emb, cfg(index))
    # Each product's own photos are queries: the product must come first nearly always.
    queries = [(p, img) for p in sorted(images) for img in images[p][:1]]
    matches = loaded.search(emb.embed([img for _, img in queries]), 1)
    recall = np.mean([m.products[0] == p for (p, _), m in zip(queries, matches, strict=True)])
    assert recall >= 0.9, recall
    assert loaded.info()["index"] == index


def test_from_images_without_images_is_an_error() -> None:
    with pytest.raises(CatalogError, match="no product images"):
        Catalog.from_images({}, FakeEmbedder(), cfg())
    with pytest.raises(CatalogError, match="no product images"):
        Catalog.from_images({"p": []}, FakeEmbedder(), cfg())


def test_unknown_index_type_lists_the_valid_ones() -> None:
    with pytest.raises(CatalogError, match="flat, hnsw, ivf"):
        Catalog(cfg(), FakeEmbedder().identity, DIM, "lsh")


# ------------------------------------------------------------------------------------ item views


def test_item_views_index_each_photo_twice_and_survive_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = random_images(3, products=3, per=2)
    images["p000"][0] = np.zeros((8, 8, 3), np.uint8)  # the crop finds no item here: whole photo only

    def crop(img: np.ndarray) -> np.ndarray | None:
        return None if not img.any() else img[2:6, 2:6]

    photos = write_photos(tmp_path / "photos", images)
    emb = FakeEmbedder()
    cat = Catalog.build(photos, emb, cfg(), progress=False, crop=crop)
    assert len(cat.vector_product) == 2 * 6 - 1
    items = [p for p in cat.paths if p.endswith("#item")]
    assert len(items) == 5 and all(p.removesuffix("#item") in cat.paths for p in items)
    # an item view is found by its own crop: the query that is exactly the cut of a photo
    query = emb.embed([images["p002"][1][2:6, 2:6]])
    assert cat.search(query, 1)[0].products[0] == "p002"
    cat.save(tmp_path / "cat")
    assert json.loads((tmp_path / "cat" / "manifest.json").read_text())["item_views"] is True
    # adding photos to it without item views is allowed, and said
    loaded = Catalog.load(tmp_path / "cat", emb, cfg())
    assert loaded.item_views and loaded.crop is None
    more = write_photos(tmp_path / "more", random_images(4, products=1, per=1))
    with caplog.at_level("WARNING"):
        assert loaded.add(more, emb, progress=False) == 1
    assert "built with item views; these photos are added without" in caplog.text
