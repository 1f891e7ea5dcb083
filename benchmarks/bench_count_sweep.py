"""Counting against one config key, swept: how a setting of the segment, boxes or track stages was chosen.

    python3 benchmarks/bench_count_sweep.py --key track.new_track_threshold --values 0.6 0.65 0.7 0.75 0.8 0.85
    python3 benchmarks/bench_count_sweep.py --key boxes.weak_boundary --values 0 0.72 0.75 0.78 0.8 --sets DIR

For each value of ``--key`` (the rest at the default config) this prints and writes, side by side:

- real sets (bench_real_count.measure): top-down photos with exactly one item, images of the hands
  TRAIN and VALIDATION splits with an item on a hand, belt frames counted right through its station;
- with ``--sets DIR`` (the folder ``python -m export segment-sets --out DIR`` writes): instance recall
  and precision on the held-out synthetic composites (``heldout``: touching items of every size, with
  their ground truth) and the share of touching real packshot pairs kept apart (``packshot_pairs``),
  through ``stream.eval.segment``: what merging fragments must not cost;
- the rendered scenes through the whole pipeline (tracker included): recall, duplicates, spurious,
  label accuracy (stream.eval.scenes).

``track.new_track_threshold`` (a detection becomes an item only when the mean confidence of its
item-class pixels reaches it): the hands TRAIN split (no image with an item on a hand) and the
rendered scenes (recall and labels no worse than at 0.6) allowed 0.65 to 0.80 (measured 2026-12-03,
segmenter v3, when an item's confidence still averaged its boundary band in). Within that range
the default 0.70 keeps the grey bolt of the
real belt clip, whose confidence falls below 0.75 in many frames: the belt informed the choice, so its
figure is not an unseen one.

``boxes.weak_boundary`` (a small component joins its neighbour when the boundary between them is
drawn less sure than this): see the README section "Real stations" for the sweep and how the default
was picked.

Writes benchmarks/results/sweep_<key>.json and .png (default ``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_real_count import REAL, measure

from stream.app import catalog_item_crop
from stream.config import load_config
from stream.eval.scenes import score_seeds
from stream.eval.segment import eval_segment
from stream.sources.demo import demo_photos
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder

COLUMNS = (
    ("value", "{:.2f}"),
    ("topdown exactly 1", "{:.1%}"),
    ("hands train: img w/ item on hand", "{:.1%}"),
    ("hands val: img w/ item on hand", "{:.1%}"),
    ("belt right (station)", "{:.1%}"),
    ("composites recall / precision", "{}"),
    ("pairs apart", "{}"),
    ("scenes recall", "{:.1%}"),
    ("dup / spurious", "{}"),
    ("scenes labels", "{:.1%}"),
)


def segment_sets(sets: Path, overrides: dict) -> dict:
    """eval segment on the held-out composites and the real packshot pairs at ``overrides``."""
    cfg = load_config(overrides={"segment.model.provider": "cpu", **overrides})
    return {
        name: eval_segment(sets / name / "images", sets / name / "masks", cfg.segment, cfg.boxes, progress=False)
        for name in ("heldout", "packshot_pairs")
    }


def sweep_row(  # noqa: PLR0917
    key: str, value: float, seeds: list[int], seconds: float, embedder: Embedder, catalog: Catalog, sets: Path | None
) -> dict:
    real = measure("builtin:segmenter", {key: value})
    scenes = score_seeds(seeds, seconds, embedder, catalog, {key: value})
    seg = segment_sets(sets, {key: value}) if sets else {}
    return {
        "value": value,
        "topdown_exact": real["topdown_products"]["exact_rate"],
        "hands_train_images_on_hand": real["hands_train"]["images_with_item_on_mask"],
        "hands_val_images_on_hand": real["hands_validation"]["images_with_item_on_mask"],
        "belt_right_station": real["belt"]["right_station"],
        **{
            f"{name}_{k}": seg[name][k]
            for name in seg
            for k in ("instance_recall", "instance_precision", "touching_separated")
        },
        "scenes_recall": scenes["recall"],
        "scenes_duplicates": scenes["total"]["duplicates"],
        "scenes_spurious": scenes["total"]["spurious"],
        "scenes_label_accuracy": scenes["label_accuracy"],
        "model": real["model"],
    }


def cells(r: dict) -> list[str]:
    has_sets = "heldout_instance_recall" in r
    vals = [
        r["value"],
        r["topdown_exact"],
        r["hands_train_images_on_hand"],
        r["hands_val_images_on_hand"],
        r["belt_right_station"],
        f"{r['heldout_instance_recall']:.1%} / {r['heldout_instance_precision']:.1%}" if has_sets else "-",
        f"{r['packshot_pairs_touching_separated']:.0%}" if has_sets else "-",
        r["scenes_recall"],
        f"{r['scenes_duplicates']} / {r['scenes_spurious']}",
        r["scenes_label_accuracy"],
    ]
    return [fmt.format(v) for (_, fmt), v in zip(COLUMNS, vals, strict=True)]


def plot(rows: list[dict], path: Path, key: str, default: float) -> None:
    import matplotlib  # noqa: PLC0415  (only the plot needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    x = [r["value"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for field, label, style in (
        ("topdown_exact", "real top-down: exactly one item", "o-"),
        ("belt_right_station", "real belt: frames right (station)", "s-"),
        ("hands_val_images_on_hand", "real hands VAL: images with an item on a hand", "v-"),
        ("hands_train_images_on_hand", "real hands TRAIN: images with an item on a hand", "v--"),
        ("scenes_recall", "rendered scenes: recall", "d-"),
        ("scenes_label_accuracy", "rendered scenes: label accuracy", "d--"),
        ("heldout_instance_recall", "synthetic composites: instance recall", "x-"),
        ("heldout_instance_precision", "synthetic composites: instance precision", "x--"),
    ):
        if field in rows[0]:
            ax.plot(x, [100 * r[field] for r in rows], style, label=label)
    ax.axvline(default, color="grey", lw=1, ls=":")
    ax.text(default, 50, f" default {default:.2f}", color="grey")
    ax.set_xlabel(key)
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _error(message: str) -> int:
    print(f"bench_count_sweep: error: {message}", file=sys.stderr)
    return 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--key", required=True, help="the config key swept, e.g. boxes.weak_boundary")
    ap.add_argument("--values", type=float, nargs="+", required=True, help="values of a float key")
    ap.add_argument("--sets", type=Path, default=None, help="folder of python -m export segment-sets (optional)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 4, 5, 20, 21, 22, 23, 24])
    ap.add_argument("--seconds", type=float, default=14.0)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/sweep_<key>.json")
    args = ap.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"sweep_{args.key}.json"
    cfg = load_config()
    try:
        default = float(functools.reduce(getattr, args.key.split("."), cfg))  # type: ignore[arg-type]
    except (AttributeError, TypeError, ValueError):
        return _error(f"--key {args.key}: not a float config key")
    if not REAL.is_dir():
        return _error(f"{REAL} is absent (the shared data)")
    if args.sets and not all((args.sets / n / "masks").is_dir() for n in ("heldout", "packshot_pairs")):
        return _error(f"--sets {args.sets}: no heldout/ and packshot_pairs/ (python -m export segment-sets --out DIR)")
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.from_images(demo_photos(), embedder, cfg.catalog, catalog_item_crop(cfg))
    rows = []
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for value in args.values:
        rows.append(sweep_row(args.key, value, args.seeds, args.seconds, embedder, catalog, args.sets))
        print("| " + " | ".join(cells(rows[-1])) + " |", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"key": args.key, "default": default, "seeds": args.seeds, "seconds": args.seconds, "rows": rows}, indent=2
        )
        + "\n"
    )
    plot(rows, out.with_suffix(".png"), args.key, default)
    print(f"default {args.key} = {default}; wrote {out} and {out.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
