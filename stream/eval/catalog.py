"""Recognition accuracy of the embedder + catalog on labelled photos.

A catalog is built from GALLERY (GALLERY/<product>/*.jpg or GALLERY/<product>.jpg); every photo in
QUERIES/<product>/*.jpg is embedded whole, exactly as the runtime embeds an item crop (letterboxed
to the model's size), and looked up. Queries of products absent from the gallery are counted apart:
they cannot be right.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.config import CatalogConfig, ClassifyConfig
from stream.stages.catalog import Catalog, CatalogError, find_photos
from stream.stages.embed import Embedder

log = logging.getLogger(__name__)

BATCH = 32


def eval_catalog(gallery: Path, queries: Path, classify_cfg: ClassifyConfig, catalog_cfg: CatalogConfig,
                 progress: bool = True, *, embedder: Embedder | None = None) -> dict[str, Any]:
    """{top1, top5, per_product, per_product_queries, n_queries, n_products, skipped_queries, model}."""
    embedder = embedder or Embedder(classify_cfg.model)
    catalog = Catalog.build(Path(gallery), embedder, catalog_cfg, progress=progress)
    known = set(catalog.products)
    found = find_photos(Path(queries))
    files = [(p, f) for p, fs in sorted(found.items()) for f in fs]
    if not files:
        raise CatalogError(f"no query photos in {queries}: expected {queries}/<product>/*.jpg")
    labels: list[str] = []
    ranked: list[tuple[str, ...]] = []
    skipped = unreadable = 0
    batch: list[np.ndarray] = []
    batch_labels: list[str] = []

    def flush() -> None:
        if batch:
            for m in catalog.search(embedder.embed(batch), 5):
                ranked.append(m.products)
            labels.extend(batch_labels)
            batch.clear()
            batch_labels.clear()

    for product, path in tqdm(files, desc="queries", unit="img", disable=not progress, leave=False):
        if product not in known:
            skipped += 1
            continue
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            unreadable += 1
            continue
        batch.append(img)
        batch_labels.append(product)
        if len(batch) >= BATCH:
            flush()
    flush()
    if skipped:
        log.warning("%d queries of products not in the gallery were left out", skipped)
    hits1 = np.array([r[:1] == (t,) for t, r in zip(labels, ranked, strict=True)], dtype=bool)
    hits5 = np.array([t in r[:5] for t, r in zip(labels, ranked, strict=True)], dtype=bool)
    per_product: dict[str, float] = {}
    per_n: dict[str, int] = {}
    lab = np.array(labels)
    for product in sorted(set(labels)):
        sel = lab == product
        per_product[product] = float(hits1[sel].mean())
        per_n[product] = int(sel.sum())
    ident = embedder.identity
    return {
        "top1": float(hits1.mean()) if len(hits1) else 0.0,
        "top5": float(hits5.mean()) if len(hits5) else 0.0,
        "per_product": per_product,
        "per_product_queries": per_n,
        "n_queries": len(labels),
        "n_products": len(catalog.products),
        "n_gallery_images": int(len(catalog.vector_product)),
        "skipped_queries": skipped,
        "unreadable_queries": unreadable,
        "model": f"{ident['name']} v{ident['version']} ({ident['sha256'][:12]})",
    }


def format_table(result: dict[str, Any], worst: int = 10) -> str:
    """A short human summary: overall accuracy, then the worst products."""
    lines = [
        f"model      {result['model']}",
        f"gallery    {result['n_products']} products, {result['n_gallery_images']} images",
        f"queries    {result['n_queries']} (left out, product not in gallery: {result['skipped_queries']})",
        f"top-1      {result['top1'] * 100:6.2f} %",
        f"top-5      {result['top5'] * 100:6.2f} %",
    ]
    per = sorted(result["per_product"].items(), key=lambda kv: (kv[1], kv[0]))[:worst]
    if per:
        lines.append(f"worst {len(per)} products (top-1, queries):")
        n = result.get("per_product_queries", {})
        lines += [f"  {acc * 100:6.1f} %  {n.get(p, '?'):>3}  {p}" for p, acc in per]
    return "\n".join(lines)
