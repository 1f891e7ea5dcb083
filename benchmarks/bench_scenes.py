"""Item-level accuracy of the whole pipeline on rendered checkout scenes (ground truth known).

The scorer is ``stream.eval.scenes`` (recall, duplicate and spurious tracks, label accuracy); see its
docstring. The metric regression test (tests/test_scene_metrics.py) holds a declared seed list to
expected values in tests/expected_scene_metrics.json.

Usage: python3 benchmarks/bench_scenes.py [--seeds 10 11 12] [--seconds 20] [--set key=value ...]
Writes benchmarks/results/scenes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.app import catalog_item_crop
from stream.config import load_config
from stream.eval.scenes import score_seeds
from stream.sources.demo import demo_photos
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scenes.json")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(overrides=overrides)
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.from_images(demo_photos(), embedder, cfg.catalog, catalog_item_crop(cfg))
    result = score_seeds(args.seeds, args.seconds, embedder, catalog, overrides)
    rows, total = result["rows"], result["total"]
    cols = list(rows[0])
    print(f"overrides: {overrides or 'none'}")
    print("".join(f"{c:>15}" for c in cols))
    for r in rows + [{"seed": "total", **total}]:
        print("".join(f"{r[c]!s:>15}" for c in cols))
    recall, acc = result["recall"], result["label_accuracy"]
    print(
        f"recall {recall:.3f}, duplicates {total['duplicates']}, spurious {total['spurious']}, label accuracy {acc:.3f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"overrides": overrides, "rows": rows, "total": total, "recall": recall, "label_accuracy": acc}, indent=2
        )
    )


if __name__ == "__main__":
    main()
