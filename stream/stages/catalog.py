"""The product catalog: FAISS index over product-photo embeddings, on disk as a directory.

    CATALOG/index.faiss    faiss.write_index (no pickle anywhere)
    CATALOG/catalog.json   product ids, display names, image path and product of every vector
    CATALOG/manifest.json  embedder identity (name, version, sha256), dim, index type, count, created

With item views (``catalog.item_views``, off by default) every photo is indexed twice: whole, and cut
to its largest item by an ``ItemCrop`` (the segmenter and box stage, padded as the runtime pads an
item crop), so a photo taken on the counter matches the runtime's crops and a close-up still matches
as a whole; its second path ends in ``#item``. A product's score for a query is its best vector's cosine
similarity; ``search`` returns the top-k
distinct products (the alternatives measured against this rule: README, Measured). Loading a
catalog built by another embedder is refused: its vectors live in another space and every match
would be silently wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np
from tqdm import tqdm

from stream.config import CatalogConfig
from stream.stages.protocols import EmbedderLike
from stream.types import Match

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EMBED_BATCH = 32
INDEX_FILE, SIDECAR_FILE, MANIFEST_FILE = "index.faiss", "catalog.json", "manifest.json"
IDENTITY_KEYS = ("name", "version", "sha256")
ITEM_SUFFIX = "#item"
# A photo -> its largest item's crop, or None when the segmenter finds no item in it.
ItemCrop = Callable[[np.ndarray], "np.ndarray | None"]


class CatalogError(RuntimeError):
    """A catalog is missing, corrupt, empty or was built with another embedder."""


def _flat(dim: int, n: int) -> faiss.Index:
    return faiss.IndexFlatIP(dim)


def _hnsw(dim: int, n: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 64
    return index


def _ivf(dim: int, n: int) -> faiss.Index:
    # ~4*sqrt(n) lists, each trained with >= 39 points (faiss warns below that).
    nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = max(1, nlist // 8)
    return index


INDEX_TYPES = {"flat": _flat, "hnsw": _hnsw, "ivf": _ivf}


def display_name(product: str) -> str:
    return product.replace("_", " ").replace("-", " ")


def find_photos(root: Path) -> dict[str, list[Path]]:
    """ROOT/<product>/*.jpg|png... and ROOT/<product>.jpg -> {product: [paths]} (sorted)."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        raise CatalogError(f"photo folder {root} does not exist (expected {root}/<product>/*.jpg)")
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            files = sorted(f for f in entry.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if files:
                found.setdefault(entry.name, []).extend(files)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTS:
            found.setdefault(entry.stem, []).append(entry)
    return found


def _read_images(files: list[tuple[str, Path]], progress: bool, what: str) -> Iterator[tuple[str, str, Any]]:
    """(product, path, BGR image or None when unreadable) for each file."""
    for product, path in tqdm(files, desc=what, unit="img", disable=not progress, leave=False):
        yield product, str(path), cv2.imread(str(path), cv2.IMREAD_COLOR)


class Catalog:
    """FAISS index + sidecar; built from photos, saved/loaded as a directory, searched by vectors."""

    def __init__(
        self, cfg: CatalogConfig, identity: dict[str, str], dim: int, index_type: str, crop: ItemCrop | None = None
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise CatalogError(f"unknown index type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
        self.cfg = cfg
        self.identity = {k: str(identity.get(k, "")) for k in IDENTITY_KEYS}
        self.dim = dim
        self.index_type = index_type
        self.products: list[str] = []
        self.names: dict[str, str] = {}
        self.paths: list[str] = []
        self.vector_product = np.zeros(0, dtype=np.int64)
        self.created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.skipped = 0  # unreadable images met while building/adding
        self.crop = crop  # item views of the photos added from now on (None: whole photos only)
        self.item_views = crop is not None  # as recorded in the manifest: how the catalog was built
        self._index: faiss.Index | None = None
        self._gpu_index: faiss.Index | None = None
        # faiss keeps this threshold process-wide; small query batches scan faster below it.
        faiss.cvar.distance_compute_blas_threshold = cfg.blas_threshold

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        photos: Path,
        embedder: EmbedderLike,
        cfg: CatalogConfig,
        progress: bool = True,
        crop: ItemCrop | None = None,
    ) -> Catalog:
        """Embed every photo under ``photos`` (ROOT/<product>/*.jpg or ROOT/<product>.jpg), and its
        item view when ``crop`` is given."""
        catalog = cls(cfg, embedder.identity, embedder.dim, cfg.index, crop)
        catalog.add(Path(photos), embedder, progress=progress)
        return catalog

    @classmethod
    def from_images(
        cls,
        images: dict[str, list[np.ndarray]],
        embedder: EmbedderLike,
        cfg: CatalogConfig,
        crop: ItemCrop | None = None,
    ) -> Catalog:
        """A catalog from in-memory BGR images per product (the demo's packshots)."""
        catalog = cls(cfg, embedder.identity, embedder.dim, cfg.index, crop)
        items = [(p, f"<memory:{p}/{i}>", img) for p in sorted(images) for i, img in enumerate(images[p])]
        if not items:
            raise CatalogError("no product images given: expected {product: [BGR images]}")
        catalog._add_items(iter(items), embedder)
        return catalog

    def add(self, photos: Path, embedder: EmbedderLike, progress: bool = True) -> int:
        """Add the photos under ``photos`` (new products or more views of known ones) without
        rebuilding. Returns how many vectors were added."""
        self._check_identity(embedder.identity, f"photos {photos}")
        if self.item_views != (self.crop is not None):
            log.warning(
                "the catalog was built %s item views; these photos are added %s (catalog.item_views)",
                "with" if self.item_views else "without",
                "with" if self.crop is not None else "without",
            )
        found = find_photos(Path(photos))
        files = [(product, path) for product, paths in found.items() for path in paths]
        if not files:
            raise CatalogError(
                f"no product photos found in {photos}: expected {photos}/<product>/*.jpg (or .png)"
                f" or {photos}/<product>.jpg"
            )
        added = self._add_items(_read_images(files, progress, f"embedding {Path(photos).name}"), embedder)
        log.info(
            "catalog: +%d images (%d products now, %d unreadable skipped)", added, len(self.products), self.skipped
        )
        return added

    def _add_items(self, items: Iterator[tuple[str, str, Any]], embedder: EmbedderLike) -> int:
        vectors: list[np.ndarray] = []
        owners: list[str] = []
        paths: list[str] = []
        batch: list[tuple[str, str, np.ndarray]] = []
        skipped = 0

        def flush() -> None:
            if batch:
                vectors.append(embedder.embed([img for _, _, img in batch]))
                owners.extend(p for p, _, _ in batch)
                paths.extend(s for _, s, _ in batch)
                batch.clear()

        for product, source, img in items:
            if img is None or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
                skipped += 1
                continue
            batch.append((product, source, img))
            item = self.crop(img) if self.crop is not None else None
            if item is not None and item.size:
                batch.append((product, source + ITEM_SUFFIX, item))
            if len(batch) >= EMBED_BATCH:
                flush()
        flush()
        if skipped:
            log.warning("catalog: skipped %d unreadable image(s)", skipped)
        self.skipped += skipped
        if not vectors:
            if not self.products:
                raise CatalogError(f"no readable product images ({skipped} unreadable): nothing to index")
            return 0
        self._append(np.concatenate(vectors).astype(np.float32), owners, paths)
        return len(owners)

    def _append(self, vectors: np.ndarray, owners: list[str], paths: list[str]) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise CatalogError(f"embedder returned shape {vectors.shape}, expected (N, {self.dim})")
        for p in owners:
            if p not in self.names:
                self.names[p] = display_name(p)
                self.products.append(p)
        pos = {p: i for i, p in enumerate(self.products)}
        self.vector_product = np.concatenate([self.vector_product, [pos[p] for p in owners]]).astype(np.int64)
        self.paths.extend(paths)
        if self._index is None or (self.index_type == "ivf"):
            # IVF's coarse quantiser is trained on the data: retrain on everything (cheap at these sizes).
            old = self._all_vectors()
            self._index = INDEX_TYPES[self.index_type](self.dim, len(old) + len(vectors))
            data = np.concatenate([old, vectors]) if len(old) else vectors
            if not self._index.is_trained:
                self._index.train(data)
            self._index.add(np.ascontiguousarray(data))
        else:
            self._index.add(np.ascontiguousarray(vectors))
        self._gpu_index = None

    def _all_vectors(self) -> np.ndarray:
        if self._index is None or self._index.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.index_type == "ivf":
            faiss.extract_index_ivf(self._index).make_direct_map()
        return np.asarray(self._index.reconstruct_n(0, self._index.ntotal), dtype=np.float32)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        if self._index is None:
            raise CatalogError("nothing to save: the catalog is empty")
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(directory / INDEX_FILE))
        sidecar = {
            "products": self.products,
            "names": self.names,
            "paths": self.paths,
            "vector_product": self.vector_product.tolist(),
        }
        (directory / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=1) + "\n")
        # The manifest goes last: a directory with a manifest is a complete catalog.
        (directory / MANIFEST_FILE).write_text(json.dumps(self._manifest(), indent=2) + "\n")

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "embedder": self.identity,
            "dim": self.dim,
            "index": self.index_type,
            "count": int(len(self.vector_product)),
            "products": len(self.products),
            "item_views": self.item_views,
            "created": self.created,
        }

    @classmethod
    def load(cls, directory: Path, embedder: EmbedderLike, cfg: CatalogConfig, crop: ItemCrop | None = None) -> Catalog:
        """A saved catalog; photos ``add``-ed to it later get item views when ``crop`` is given."""
        directory = Path(directory)
        paths = [directory / n for n in (INDEX_FILE, SIDECAR_FILE, MANIFEST_FILE)]
        if not all(p.is_file() for p in paths):
            raise CatalogError(
                f"{directory} is not a catalog (expected {', '.join(p.name for p in paths)});"
                " build one with `checkout-stream catalog build`"
            )
        try:
            manifest = json.loads(paths[2].read_text())
            sidecar = json.loads(paths[1].read_text())
            index = faiss.read_index(str(paths[0]))
        except (ValueError, RuntimeError) as exc:
            raise CatalogError(f"catalog {directory} is corrupt ({exc}); rebuild it") from None
        catalog = cls(
            cfg, manifest.get("embedder", {}), int(manifest.get("dim", 0)), manifest.get("index", "flat"), crop
        )
        catalog.item_views = bool(manifest.get("item_views", False))
        catalog._check_identity(embedder.identity, f"catalog {directory}", built=True)
        if catalog.dim != embedder.dim or index.d != embedder.dim:
            raise CatalogError(
                f"catalog {directory} holds {index.d}-d vectors, the embedder makes {embedder.dim}-d;"
                " rebuild it with `checkout-stream catalog build`"
            )
        catalog.products = list(sidecar["products"])
        catalog.names = dict(sidecar["names"])
        catalog.paths = list(sidecar["paths"])
        catalog.vector_product = np.asarray(sidecar["vector_product"], dtype=np.int64)
        catalog.created = manifest.get("created", catalog.created)
        catalog._index = index
        if index.ntotal != len(catalog.vector_product) or len(catalog.paths) != index.ntotal:
            raise CatalogError(
                f"catalog {directory} is inconsistent: index holds {index.ntotal} vectors,"
                f" catalog.json {len(catalog.vector_product)}; rebuild it"
            )
        if cfg.index != catalog.index_type:
            log.info(
                "catalog %s uses a %s index (config says %s; rebuild to change)",
                directory,
                catalog.index_type,
                cfg.index,
            )
        return catalog

    def _check_identity(self, runtime: dict[str, str], what: str, built: bool = False) -> None:
        theirs = {k: str(runtime.get(k, "")) for k in IDENTITY_KEYS}
        if theirs == self.identity:
            return
        mine = self.identity
        raise CatalogError(
            f"{what if built else 'this catalog'} was built with embedder {mine['name']} v{mine['version']}"
            f" (sha {mine['sha256'][:12]}) but the runtime uses {theirs['name']} v{theirs['version']}"
            f" (sha {theirs['sha256'][:12]}); rebuild it with `checkout-stream catalog build`"
        )

    # ------------------------------------------------------------------ queries

    def info(self) -> dict[str, Any]:
        return {
            **self._manifest(),
            "vectors": int(len(self.vector_product)),
            "gpu": self._gpu_index is not None,
            "skipped_images": self.skipped,
        }

    def _searcher(self) -> faiss.Index:
        if self._index is None:
            raise CatalogError("the catalog is empty: build it from product photos first")
        if (
            self._gpu_index is None
            and self.cfg.use_gpu
            and self.index_type != "hnsw"
            and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0
        ):
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index)
            log.info("catalog index on GPU")
        return self._gpu_index if self._gpu_index is not None else self._index

    def search(self, vectors: np.ndarray, k: int) -> list[Match]:
        """Top-``k`` distinct products per query vector (float32 [N, D], L2-normalised)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"search expects float32 [N, {self.dim}] vectors, found shape {vectors.shape}")
        if len(vectors) == 0:
            return []
        index = self._searcher()
        n_total, k = index.ntotal, max(1, min(k, len(self.products)))
        want = min(n_total, k * 4)
        while True:
            scores, ids = index.search(vectors, want)
            matches = [self._aggregate(s, i, k) for s, i in zip(scores, ids, strict=True)]
            # A product may own many of the nearest vectors: widen until every query has k products.
            if want >= n_total or all(len(m.products) == k for m in matches):
                return matches
            want = min(n_total, want * 4)

    def _aggregate(self, scores: np.ndarray, ids: np.ndarray, k: int) -> Match:
        best: dict[int, float] = {}
        for s, i in zip(scores.tolist(), ids.tolist(), strict=True):
            if i >= 0:
                p = int(self.vector_product[i])
                if p not in best:  # results come best first: the first hit is the product's max
                    best[p] = s
                    if len(best) == k:
                        break
        return Match(products=tuple(self.products[p] for p in best), scores=tuple(float(s) for s in best.values()))
