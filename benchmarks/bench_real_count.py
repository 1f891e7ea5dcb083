"""Counting on real footage with the product's own stages, one or more segmenters side by side.

Sets (../shared/data/real, see its README; none is ever trained on):
- topdown-products: one product per photo, ``eval count --count 1``: share of photos with exactly one item.
- hands VALIDATION split (egohands 11-20, desk 76-100): share of hand pixels called item/boundary and
  share of images with an item lying on a hand (>= half of the item's pixels on the hand mask); the
  TRAIN split (egohands 01-10, desk 51-75) beside it, which the segmenter's composites cut hands from
  and bench_count_sweep.py chooses the tracker's birth threshold on.
- belt: the station onboarded from the empty frames named in bolt.json (reference only, no fitting),
  then the share of bolt.json's frames counted right, without and with the station.

Usage: python3 benchmarks/bench_real_count.py [--models NAME=PATH ...] [--out FILE]
Writes benchmarks/results/real_count.json (default) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.config import load_config, replace
from stream.eval.count import eval_count, parse_select, product_stages
from stream.station.onboard import create_station

REAL = ROOT.parent / "shared" / "data" / "real"
HANDS_VALIDATION = "11-20,76-100"
HANDS_TRAIN = "1-10,51-75"


def measure(model: str, overrides: dict | None = None) -> dict:
    """The real sets counted with segmenter ``model`` and the default config plus ``overrides``; items
    are the detections that could start a track (track.new_track_threshold), as the runtime reports."""
    cfg = load_config(overrides={"segment.model.provider": "cpu", **(overrides or {})})
    seg_cfg = replace(
        cfg.segment, model=replace(cfg.segment.model, path=model, verify_checksum=model.startswith("builtin:"))
    )
    seg, ext, identity = product_stages(seg_cfg, cfg.boxes, cfg.track)
    top = eval_count([REAL / "topdown-products"], seg, ext, count=1)
    hands = [REAL / "hands" / n for n in ("egohands", "desk")]
    hv, ht = (
        eval_count(
            [h / "images" for h in hands],
            seg,
            ext,
            masks=[h / "masks" for h in hands],
            select=parse_select(split),
        )
        for split in (HANDS_VALIDATION, HANDS_TRAIN)
    )
    spec = json.loads((REAL / "belt" / "bolt.json").read_text())
    clip = REAL / "belt" / spec["clip"]
    counts = ",".join(f"{lo}-{hi}:{n}" for (lo, hi), n in spec["stable_counts"])
    with tempfile.TemporaryDirectory() as tmp:
        info = create_station(
            Path(tmp) / "belt",
            clip,
            segment_cfg=seg_cfg,
            boxes_cfg=cfg.boxes,
            track_cfg=cfg.track,
            frames=[tuple(spec["empty_frames"])],
            check=clip,
            check_counts_text=counts,
        )
    belt = info["validation"]
    return {
        "model": identity,
        "path": model,
        "topdown_products": top,
        "new_track_threshold": cfg.track.new_track_threshold,
        "hands_validation": hv,
        "hands_train": ht,
        "belt": {"empty_holdout": belt["empty_holdout"], **{k: v for k, v in belt["check"].items() if k != "source"}},
    }


def row(name: str, r: dict) -> str:
    t, h, b = r["topdown_products"], r["hands_validation"], r["belt"]
    return (
        f"| {name} | {t['exact_rate'] * 100:.1f}% (mean {t['mean_count']:.2f}) | "
        f"{h['mask_pixels_called_item'] * 100:.1f}% | {h['images_with_item_on_mask'] * 100:.1f}% | "
        f"{b['right_plain'] * 100:.1f}% / {b['right_station'] * 100:.1f}% |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["shipped=builtin:segmenter"], metavar="NAME=PATH")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_count.json")
    args = ap.parse_args()
    if not REAL.is_dir():
        print(f"bench_real_count: error: {REAL} is absent (the shared data)", file=sys.stderr)
        return 2
    pairs = [m.partition("=")[::2] for m in args.models]
    if any(not n or not p for n, p in pairs):
        print("bench_real_count: error: --models takes NAME=PATH pairs", file=sys.stderr)
        return 2
    results = {name: measure(path) for name, path in pairs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| segmenter | topdown: exactly 1 | hand px called item | images w/ item on hand | belt right plain / station |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(row(name, r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
