"""The labelled photo sets bench_recognition measures on, and their embeddings (cached per model sha256).

Sets: grocery-store ``train``, ``val``, ``iconic`` (one packshot per product) and the real
``topdown`` products. Every photo is embedded whole through the runtime's ``Embedder`` (letterboxed
to the model's size), exactly as the runtime embeds an item crop.

``*_items`` (``ITEMS``): the same photos cut to their largest item by ``app.catalog_item_crop`` (the
default segmenter and box stage, the runtime's crop padding), the whole photo where no item is found:
the item views a catalog holds with ``catalog.item_views``, and what the runtime embeds of a product
lying on the counter. Their cache key adds the segmenter's sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stream.stages.catalog import find_photos

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = {
    "train": DATA / "grocery-store" / "train",
    "val": DATA / "grocery-store" / "val",
    "iconic": DATA / "grocery-store" / "iconic",
    "topdown": DATA / "real" / "topdown-products",
}
ITEMS = ("train", "iconic", "topdown")  # sets also embedded as item views, as "<set>_items"
BATCH = 16


@dataclass(frozen=True)
class Embedded:
    """One set's photos: product name and file of each row of ``vectors`` (float32 [N, D], unit rows)."""

    products: tuple[str, ...]
    files: tuple[str, ...]
    vectors: np.ndarray

    def select(self, keep: np.ndarray) -> Embedded:
        idx = np.flatnonzero(keep)
        return Embedded(tuple(self.products[i] for i in idx), tuple(self.files[i] for i in idx), self.vectors[idx])

    def __add__(self, other: Embedded) -> Embedded:
        return Embedded(
            self.products + other.products, self.files + other.files, np.concatenate([self.vectors, other.vectors])
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embed_set(
    embedder: object, folder: Path, desc: str, prepare: Callable[[np.ndarray], np.ndarray] | None = None
) -> Embedded:
    """Embed every photo under ``folder`` (<product>/*.jpg or <product>.jpg), sorted by product and name,
    each through ``prepare`` first when given."""
    found = find_photos(folder)
    items = [(p, f) for p, fs in sorted(found.items()) for f in fs]
    vectors, products, files, batch = [], [], [], []
    for i, (product, path) in enumerate(tqdm(items, desc=desc, unit="img", leave=False)):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"bench_recognition: error: unreadable photo {path}")
        batch.append(prepare(img) if prepare else img)
        products.append(product)
        files.append(path.name)
        if len(batch) == BATCH or i == len(items) - 1:
            vectors.append(embedder.embed(batch))  # type: ignore[attr-defined]
            batch = []
    return Embedded(tuple(products), tuple(files), np.concatenate(vectors).astype(np.float32))


def embed_all(model: Path, cache: Path | None, threads: int = 1) -> dict[str, Embedded]:
    """Every set embedded by ``model``; reads/writes ``cache/<sha256>.npz`` when ``cache`` is given."""
    missing = [str(p) for p in SETS.values() if not p.is_dir()]
    if missing:
        raise SystemExit(
            f"bench_recognition: error: data not found: {', '.join(missing)}"
            " (expected ../shared/data beside the repository)"
        )
    digest = sha256(model)[:32] + sha256(ROOT / "stream" / "models" / "segmenter.onnx")[:32]
    npz = cache / f"{digest}.npz" if cache else None
    if npz is not None and npz.is_file():
        data = np.load(npz, allow_pickle=False)
        return {
            name: Embedded(
                tuple(data[f"{name}_products"].tolist()), tuple(data[f"{name}_files"].tolist()), data[f"{name}_vectors"]
            )
            for name in (*SETS, *(f"{n}_items" for n in ITEMS))
        }
    from stream.app import catalog_item_crop  # noqa: PLC0415
    from stream.config import load_config  # noqa: PLC0415
    from stream.stages.embed import Embedder  # noqa: PLC0415

    cfg = load_config(
        overrides={
            "classify.model.path": str(model),
            "classify.model.provider": "cpu",
            "classify.model.intra_op_threads": threads,
            "classify.model.verify_checksum": False,
            "catalog.item_views": True,
        }
    )
    embedder = Embedder(cfg.classify.model)
    out = {name: embed_set(embedder, folder, f"{model.parent.name}/{name}") for name, folder in SETS.items()}
    item = catalog_item_crop(cfg)
    assert item is not None

    def crop(img: np.ndarray) -> np.ndarray:
        cut = item(img)
        return img if cut is None or not cut.size else cut

    for name in ITEMS:
        out[f"{name}_items"] = embed_set(embedder, SETS[name], f"{model.parent.name}/{name}_items", crop)
    if npz is not None:
        npz.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, e in out.items():
            arrays[f"{name}_products"] = np.asarray(e.products)
            arrays[f"{name}_files"] = np.asarray(e.files)
            arrays[f"{name}_vectors"] = e.vectors
        np.savez(npz, **arrays)  # type: ignore[arg-type]
    return out
