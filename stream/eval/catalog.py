"""Recognition accuracy of the embedder + catalog on labelled photos.

A catalog is built from GALLERY (GALLERY/<product>/*.jpg or GALLERY/<product>.jpg), with item views
as ``catalog build`` makes them; every photo in QUERIES/<product>/*.jpg is embedded whole (letterboxed
to the model's size, as the runtime embeds an item crop), or cut to its largest item first
(``--query-crops``: what the runtime embeds of a product lying on the counter), and looked up.
Queries of products absent from the gallery are counted apart (they cannot be right) and, when there
are any, measure the open set: ``open_set`` holds the share of absent-product queries called unknown
by the runtime's own rule (``UnknownRule``, the ``classify`` config), the share of present ones named
right and not rejected, the share of present ones rejected, and a sweep of the rule's threshold
(``plot_open_set`` draws it) so a user can pick an operating point.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.config import CatalogConfig, ClassifyConfig
from stream.eval.openset import ABSENT, rule_figures
from stream.stages.catalog import Catalog, CatalogError, ItemCrop, find_photos
from stream.stages.classify import UnknownRule
from stream.stages.embed import Embedder

log = logging.getLogger(__name__)

BATCH = 32


def eval_catalog(
    gallery: Path,
    queries: Path,
    classify_cfg: ClassifyConfig,
    catalog_cfg: CatalogConfig,
    progress: bool = True,
    *,
    embedder: Embedder | None = None,
    crop: ItemCrop | None = None,
    query_crop: ItemCrop | None = None,
) -> dict[str, Any]:
    """{top1, top5, per_product, per_product_queries, n_queries, n_products, skipped_queries, model}
    plus ``open_set`` (None when every query's product is in the gallery). The gallery gets item views
    when ``crop`` is given; ``query_crop`` cuts each query photo to its largest item first (what the
    runtime embeds of a product lying on the counter), the whole photo when none is found."""
    embedder = embedder or Embedder(classify_cfg.model)
    catalog = Catalog.build(Path(gallery), embedder, catalog_cfg, progress=progress, crop=crop)
    known = set(catalog.products)
    found = find_photos(Path(queries))
    files = [(p, f) for p, fs in sorted(found.items()) for f in fs]
    if not files:
        raise CatalogError(f"no query photos in {queries}: expected {queries}/<product>/*.jpg")
    rule = UnknownRule.from_config(classify_cfg)
    labels: list[str] = []
    ranked: list[tuple[str, ...]] = []
    scores: list[tuple[float, ...]] = []
    unreadable = 0
    batch: list[np.ndarray] = []
    batch_labels: list[str] = []

    def flush() -> None:
        if batch:
            for m in catalog.search(embedder.embed(batch), max(5, rule.k)):
                ranked.append(m.products[:5])
                scores.append(m.scores[: rule.k])
            labels.extend(batch_labels)
            batch.clear()
            batch_labels.clear()

    for product, path in tqdm(files, desc="queries", unit="img", disable=not progress, leave=False):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            unreadable += 1
            continue
        item = query_crop(img) if query_crop is not None else None
        batch.append(img if item is None or not item.size else item)
        batch_labels.append(product)
        if len(batch) >= BATCH:
            flush()
    flush()
    absent = np.array([t not in known for t in labels], dtype=bool)
    skipped = int(absent.sum())
    if skipped:
        log.info("%d queries of products not in the gallery: measured as the open set", skipped)
    open_set = _open_set(labels, ranked, scores, known, rule)
    labels = [t for t, a in zip(labels, absent, strict=True) if not a]
    ranked = [r for r, a in zip(ranked, absent, strict=True) if not a]
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
        "open_set": open_set,
    }


def _open_set(
    labels: list[str],
    ranked: list[tuple[str, ...]],
    scores: list[tuple[float, ...]],
    known: set[str],
    rule: UnknownRule,
) -> dict[str, Any] | None:
    """Open-set figures at ``rule`` and swept; None without absent-product queries."""
    if all(t in known for t in labels):
        return None
    names = sorted(known)
    pos = {p: i for i, p in enumerate(names)}
    truth = np.array([pos.get(t, ABSENT) for t in labels], dtype=np.int64)
    pred = np.array([pos[r[0]] if r else ABSENT for r in ranked], dtype=np.int64)
    return rule_figures(rule, np.asarray(scores, dtype=np.float64), pred, truth)


def plot_open_set(result: dict[str, Any], path: Path) -> Path:
    """Draw the open-set sweeps of ``result`` (absent rejected vs present named right; the configured
    rule marked) to a PNG. Needs matplotlib (the dev extra)."""
    o = result.get("open_set")
    if not o:
        raise ValueError("no open-set sweep to plot: the queries hold no product absent from the gallery")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for key, label in (
        ("margin_sweep", f"margin swept (threshold {o['threshold']})"),
        ("threshold_sweep", "threshold swept (no margin)"),
    ):
        rows = o[key]
        ax.plot([r["unknown_rejected"] for r in rows], [r["known_correct"] for r in rows], ".-", lw=1, label=label)
    ax.plot(
        [o["unknown_rejected"]],
        [o["known_correct"]],
        "o",
        color="C3",
        label=f"default: threshold {o['threshold']}, margin {o['margin']}",
    )
    ax.set_xlabel("absent products rejected")
    ax.set_ylabel("present products named right")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def format_table(result: dict[str, Any], worst: int = 10) -> str:
    """A short human summary: overall accuracy, then the worst products."""
    lines = [
        f"model      {result['model']}",
        f"gallery    {result['n_products']} products, {result['n_gallery_images']} images",
        f"queries    {result['n_queries']} (left out, product not in gallery: {result['skipped_queries']})",
        f"top-1      {result['top1'] * 100:6.2f} %",
        f"top-5      {result['top5'] * 100:6.2f} %",
    ]
    if (o := result.get("open_set")) is not None:
        lines.append(
            f"open set   absent rejected {o['unknown_rejected'] * 100:.1f} %, present named right"
            f" {o['known_correct'] * 100:.1f} %, present rejected {o['known_rejected'] * 100:.1f} %"
            f" (threshold {o['threshold']}, margin {o['margin']}; {o['n_absent_queries']} absent,"
            f" {o['n_known_queries']} present)"
        )
    per = sorted(result["per_product"].items(), key=lambda kv: (kv[1], kv[0]))[:worst]
    if per:
        lines.append(f"worst {len(per)} products (top-1, queries):")
        n = result.get("per_product_queries", {})
        lines += [f"  {acc * 100:6.1f} %  {n.get(p, '?'):>3}  {p}" for p, acc in per]
    return "\n".join(lines)
