"""Measure an embedder ONNX on the grocery-store val split, the way the model card reports it.

    python -m export.eval_embedder MODEL.onnx [MODEL2.onnx ...] [--json OUT]

For each model: (a) catalog = train photos, (b) catalog = the 81 iconic packshots; queries = val.
Top-1 is split into the products held out of training (``export.data.HELD_OUT``) and the rest.
(c) unseen products: catalog = the 81 packshots, queries = every photo (train and val) of the
held-out products. A held-out model never saw any of these photos, so all of them are fair
queries: ~380 instead of val's 50, which a few photos would swing by 2 points each.
Val is for measurement only: nothing here feeds back into training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from export.data import HELD_OUT, default_data_root
from stream.config import load_config
from stream.eval.catalog import eval_catalog
from stream.stages.catalog import find_photos
from stream.stages.embed import Embedder


def _subset_top1(result: dict[str, Any], products: set[str]) -> dict[str, float | int]:
    acc, n = result["per_product"], result["per_product_queries"]
    chosen = [p for p in acc if p in products]
    total = sum(n[p] for p in chosen)
    hits = sum(acc[p] * n[p] for p in chosen)
    return {"top1": hits / total if total else 0.0, "n_queries": total, "n_products": len(chosen)}


def evaluate(model_path: Path, root: Path, progress: bool = True) -> dict[str, Any]:
    cfg = load_config(
        overrides={"classify.model.path": str(model_path), "classify.model.provider": "cpu", "catalog.use_gpu": False}
    )
    embedder = Embedder(cfg.classify.model)
    out: dict[str, Any] = {
        "model": str(model_path),
        "identity": embedder.identity,
        "input_size": embedder.input_size,
        "dim": embedder.dim,
    }
    held = set(HELD_OUT)
    for name, gallery in (("train_catalog", root / "train"), ("iconic_catalog", root / "iconic")):
        res = eval_catalog(gallery, root / "val", cfg.classify, cfg.catalog, progress=progress, embedder=embedder)
        seen = set(res["per_product"]) - held
        out[name] = {
            "top1": res["top1"],
            "top5": res["top5"],
            "n_queries": res["n_queries"],
            "n_products": res["n_products"],
            "held_out": _subset_top1(res, held),
            "seen": _subset_top1(res, seen),
            "per_product": res["per_product"],
        }
    with tempfile.TemporaryDirectory() as tmp:
        queries = _held_out_photos(root, Path(tmp))
        res = eval_catalog(root / "iconic", queries, cfg.classify, cfg.catalog, progress=progress, embedder=embedder)
    out["unseen_iconic"] = {
        "top1": res["top1"],
        "top5": res["top5"],
        "n_queries": res["n_queries"],
        "n_products": res["n_products"],
        "per_product": res["per_product"],
    }
    return out


def _held_out_photos(root: Path, tmp: Path) -> Path:
    """tmp/<product>/ linking every train and val photo of the held-out products."""
    for split in ("train", "val"):
        for product, files in find_photos(root / split).items():
            if product in HELD_OUT:
                (tmp / product).mkdir(exist_ok=True)
                for f in files:
                    (tmp / product / f"{split}-{f.name}").symlink_to(f.resolve())
    return tmp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.eval_embedder", description=__doc__)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--data", type=Path, default=default_data_root())
    p.add_argument("--json", type=Path, help="write all results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = [evaluate(m, args.data) for m in args.models]
    print(f"{'model':<40} {'catalog':<8} {'top1':>7} {'top5':>7} {'held-out':>9} {'seen':>7} {'unseen*':>8}")
    for r in results:
        for key, label in (("train_catalog", "train"), ("iconic_catalog", "iconic")):
            x = r[key]
            print(
                f"{Path(r['model']).name[:40]:<40} {label:<8} {x['top1'] * 100:6.1f}%"
                f" {x['top5'] * 100:6.1f}% {x['held_out']['top1'] * 100:8.1f}%"
                f" {x['seen']['top1'] * 100:6.1f}%"
                + (f" {r['unseen_iconic']['top1'] * 100:7.1f}%" if key == "iconic_catalog" else "")
            )
    print("unseen*: packshot catalog, queries = every train+val photo of the held-out products")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
