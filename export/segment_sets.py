"""``python -m export segment-sets --out DIR``: labelled sets for ``checkout-stream eval segment``.

Each set is DIR/NAME/images/*.png and DIR/NAME/masks/*.png (16-bit instance ids, 0 = background),
the layout the eval command reads. None of them was seen in segmenter training:

- ``scene``: stream/scene.py checkout frames (640x480) with at least two items, on seeds never trained on.
- ``heldout``: composites of the packshots held out of segmenter training (``split_iconic``) on
  counter styles never trained on (``HELDOUT_STYLES``).
- ``packshot_single`` and ``packshot_pairs`` (real photos): each held-out packshot, a real product
  photographed on white, alone on a white canvas, and cut out in touching pairs. The masks come from
  the white background (``product_mask``), the same cut the training sprites use; they are exact where
  the product is darker than the backdrop and follow the convex hull where white packaging meets white.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from export.composites import (
    HELDOUT_STYLES,
    CompositeMaker,
    default_iconic_dir,
    load_sprites,
    mask_sprite,
    product_mask,
    split_iconic,
)
from stream.synthetic.scene import CheckoutScene, Sprite

SIZE = (480, 640)  # (H, W) of every written image: a common camera frame
SCENE_SEEDS = (900, 901, 902)  # CheckoutScene seeds: training renders scenes with seeds 101, 102
HELDOUT_SEED0 = 7 * 10**8  # composite seeds far from the training and validation ranges

Frame = tuple[np.ndarray, np.ndarray]  # (BGR image, instance map)


def write_eval_set(out: Path, frames: Sequence[Frame], prefix: str) -> int:
    """Write (image, instance map) pairs as OUT/images/PREFIXnnnnn.png and OUT/masks/PREFIXnnnnn.png."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i, (image, inst) in enumerate(frames):
        if inst.max() >= 1 << 16:
            raise ValueError(f"instance ids up to {inst.max()} do not fit a 16-bit mask PNG")
        cv2.imwrite(str(out / "images" / f"{prefix}{i:05d}.png"), image)
        cv2.imwrite(str(out / "masks" / f"{prefix}{i:05d}.png"), inst.astype(np.uint16))
    return len(frames)


def scene_eval_frames(seeds: Sequence[int], every: int = 20, min_items: int = 2) -> list[Frame]:
    """Every ``every``-th CheckoutScene frame that shows at least ``min_items`` items."""
    out = []
    for seed in tqdm(seeds, desc="scene", leave=False):
        scene = CheckoutScene(seed=seed)
        for i in range(0, scene.n_frames, every):
            f = scene.render(i)
            if len(f.items) >= min_items:
                out.append((f.image, f.instance_map))
    return out


def heldout_frames(held: Sequence[Path], n: int) -> list[Frame]:
    maker = CompositeMaker(load_sprites(held), SIZE, styles=HELDOUT_STYLES, procedural_share=0.0)
    comps = [maker.make(HELDOUT_SEED0 + i) for i in tqdm(range(n), desc="heldout", leave=False)]
    return [(c.image, c.instances) for c in comps]


def _backdrop(image: np.ndarray) -> np.ndarray:
    """The packshot's white, as the median colour of its one-pixel border."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.uint8)


def packshot_single(photo: np.ndarray, mask: np.ndarray) -> Frame:
    """The whole photo, untouched, centred on a canvas of its own white."""
    canvas = np.empty((*SIZE, 3), np.uint8)
    canvas[:] = _backdrop(photo)
    inst = np.zeros(SIZE, np.int32)
    h, w = mask.shape
    y, x = (SIZE[0] - h) // 2, (SIZE[1] - w) // 2
    canvas[y : y + h, x : x + w] = photo
    inst[y : y + h, x : x + w] = mask
    return canvas, inst


def packshot_pair(a: Sprite, b: Sprite) -> Frame:
    """Products a and b (cut-out sprites) set side by side, slid together until their masks touch."""
    (pa, aa), (pb, ab) = a, b
    ma, mb = aa > 0, ab > 0
    canvas = np.empty((*SIZE, 3), np.uint8)
    canvas[:] = ((_backdrop(pa).astype(np.int32) + _backdrop(pb)) // 2).astype(np.uint8)
    inst = np.zeros(SIZE, np.int32)
    ha, wa = ma.shape
    hb, wb = mb.shape
    ya, yb = (SIZE[0] - ha) // 2, (SIZE[0] - hb) // 2
    xa = (SIZE[1] - wa - wb) // 2
    inst[ya : ya + ha, xa : xa + wa][ma] = 1
    canvas[ya : ya + ha, xa : xa + wa][ma] = pa[ma]
    dilated = cv2.dilate((inst > 0).astype(np.uint8), np.ones((3, 3), np.uint8))  # 8-neighbourhood
    xb = xa + wa
    while xb > xa:  # slide b left while it does not overlap a; stop once it is 8-adjacent
        if dilated[yb : yb + hb, xb : xb + wb][mb].any():
            break
        xb -= 1
    inst[yb : yb + hb, xb : xb + wb][mb] = 2
    canvas[yb : yb + hb, xb : xb + wb][mb] = pb[mb]
    return canvas, inst


def packshot_frames(held: Sequence[Path]) -> tuple[list[Frame], list[Frame]]:
    """(singles, pairs) from the held-out packshots; pair k is product k with product k+1."""
    shots: list[tuple[np.ndarray, np.ndarray]] = []
    for p in held:
        photo = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if photo is None:
            raise FileNotFoundError(f"cannot read packshot {p} (expected a JPEG/PNG product photo)")
        mask = product_mask(photo)
        if mask is not None:  # a packshot not on white has no mask to measure against
            shots.append((photo, mask))
    singles = [packshot_single(photo, mask) for photo, mask in shots]
    sprites = [mask_sprite(photo, mask) for photo, mask in shots]
    pairs = [packshot_pair(sprites[i], sprites[(i + 1) % len(sprites)]) for i in range(len(sprites))]
    return singles, pairs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per set)")
    p.add_argument(
        "--iconic",
        type=Path,
        default=None,
        help="folder of packshots on white; the segmenter's held-out ones are used "
        "(default: ../shared/data/grocery-store/iconic, skipped when absent)",
    )
    p.add_argument("--heldout-images", type=int, default=100, help="composites in the heldout set")


def run(args: argparse.Namespace) -> int:
    iconic = args.iconic or default_iconic_dir()
    try:  # an explicit --iconic that is missing, empty or unreadable is the user's to fix
        held = split_iconic(iconic)[1] if args.iconic or iconic.is_dir() else []
        sets: dict[str, list[Frame]] = {"scene": scene_eval_frames(SCENE_SEEDS)}
        if held:
            sets["heldout"] = heldout_frames(held, args.heldout_images)
            sets["packshot_single"], sets["packshot_pairs"] = packshot_frames(held)
    except FileNotFoundError as exc:
        print(f"python -m export segment-sets: error: {exc}", file=sys.stderr)
        return 2
    counts = {name: write_eval_set(args.out / name, frames, name) for name, frames in sets.items()}
    print(json.dumps({"out": str(args.out), "images": counts, "packshots": [p.stem for p in held]}, indent=2))
    if not held:
        print(f"no packshots in {iconic}: wrote the scene set only")
    return 0
