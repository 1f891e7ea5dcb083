"""Grocery-store images for embedder training: loading (decoded once, at reduced size) and the
augmentation that turns a photo or a white-background packshot into a plausible checkout crop.

Every sample ends with ``stream.stages.embed.letterbox``: the exact function the runtime applies to a crop.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.stages.embed import letterbox

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
# Held out of training to measure recognition of products the embedder never saw. Fixed: changing
# it changes what the "unseen" numbers mean. One or two per coarse class, all present in val, each
# with siblings of the same coarse class left in training (the hard, fine-grained case).
HELD_OUT = (
    "Pink-Lady",  # Apple
    "Conference",  # Pear
    "Lime",
    "Red-Bell-Pepper",  # Pepper
    "Galia-Melon",  # Melon
    "Sweet-Potato",  # Potato
    "Arla-Standard-Milk",  # Milk
    "God-Morgon-Orange-Juice",  # Juice
    "Yoggi-Vanilla-Yoghurt",  # Yoghurt
    "Alpro-Blueberry-Soyghurt",  # Soyghurt
)


def default_data_root() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grocery-store"


def decode_side(size: int) -> int:
    """Longest side training photos are decoded at for crop side ``size``: 1.25x, so the random
    zoomed-in crops keep their detail (the photos are ~348 px: no upsampling beyond that)."""
    return max(224, round(size * 1.25))


def read_image(path: Path, max_side: int) -> np.ndarray | None:
    """BGR uint8 image shrunk so its longer side is at most ``max_side``; None if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    scale = max_side / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return img


def coarse_classes(root: Path) -> dict[str, str]:
    with open(root / "classes.csv", newline="") as fh:
        return {row["class"]: row["coarse_class"] for row in csv.DictReader(fh)}


@dataclass
class Split:
    """Decoded images with integer labels into ``products``; ``iconic`` marks packshots."""

    products: list[str]
    images: list[np.ndarray]
    labels: np.ndarray
    iconic: np.ndarray


def load_training(
    root: Path, exclude: tuple[str, ...] = (), max_side: int = 224, limit_per_product: int | None = None
) -> Split:
    """train/<product>/*.jpg plus iconic/<product>.jpg, excluding ``exclude``."""
    products = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and p.name not in exclude)
    images, labels, iconic = [], [], []
    for label, product in enumerate(products):
        files = sorted(f for f in (root / "train" / product).iterdir() if f.suffix.lower() in IMAGE_EXTS)
        files = files[:limit_per_product] if limit_per_product else files
        packshot = root / "iconic" / f"{product}.jpg"
        for f, is_iconic in [(f, False) for f in files] + [(packshot, True)] * packshot.exists():
            img = read_image(f, max_side)
            if img is None:
                log.warning("skipping unreadable %s", f)
                continue
            images.append(img)
            labels.append(label)
            iconic.append(is_iconic)
    return Split(products, images, np.asarray(labels, np.int64), np.asarray(iconic, bool))


# ---------------------------------------------------------------------------------- augmentation


def _random_resized_crop(rng: np.random.Generator, img: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
        if 8 <= cw <= w and 8 <= ch <= h:
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            return img[y : y + ch, x : x + cw]
    return img


def _rotate(rng: np.random.Generator, img: np.ndarray, max_deg: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-max_deg, max_deg), 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)


def _hand_blob(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Occlude an edge of the crop with a skin-coloured palm + fingers (a hand holding the item)."""
    out = img.copy()
    h, w = out.shape[:2]
    skin_hsv = np.array([[[rng.integers(5, 20), rng.integers(60, 150), rng.integers(110, 240)]]], np.uint8)
    colour = tuple(int(c) for c in cv2.cvtColor(skin_hsv, cv2.COLOR_HSV2BGR)[0, 0])
    side = rng.integers(4)
    cx = [rng.uniform(0, w), w, rng.uniform(0, w), 0][side]
    cy = [h, rng.uniform(0, h), 0, rng.uniform(0, h)][side]
    r = rng.uniform(0.15, 0.3) * min(h, w)
    cv2.ellipse(out, (int(cx), int(cy)), (int(r * 1.3), int(r)), rng.uniform(0, 180), 0, 360, colour, -1)
    for _ in range(rng.integers(2, 5)):  # fingers reaching inwards
        ang = np.arctan2(h / 2 - cy, w / 2 - cx) + rng.uniform(-0.6, 0.6)
        length = r * rng.uniform(1.2, 2.0)
        end = (int(cx + np.cos(ang) * length), int(cy + np.sin(ang) * length))
        cv2.line(out, (int(cx), int(cy)), end, colour, max(2, int(r * 0.35)), cv2.LINE_AA)
    return out


def _colour(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-4, 4)) % 180  # small: hue separates many products
    hsv[..., 1] *= rng.uniform(0.7, 1.3)
    hsv[..., 2] *= rng.uniform(0.65, 1.35)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.75, 1.25) + mean  # contrast
    out *= rng.uniform(0.9, 1.1, size=3)  # white balance
    return np.clip(out, 0, 255).astype(np.uint8)


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            img = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)
    if rng.random() < 0.15:
        small = cv2.resize(img, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return img


def _packshot_on_clutter(rng: np.random.Generator, shot: np.ndarray, clutter: np.ndarray) -> np.ndarray:
    """Cut the product off its white background and paste it on a random photo patch, cropped
    around the product with a random margin, like a segmented item's box crop at runtime."""
    fg = (shot.min(axis=2) < 235).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(fg)
    if len(xs) < 16:
        return shot
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    item, mask = shot[y0:y1, x0:x1], fg[y0:y1, x0:x1]
    ih, iw = item.shape[:2]
    pad = rng.uniform(0.0, 0.3)
    ch, cw = int(ih * (1 + pad)) + 1, int(iw * (1 + pad)) + 1
    bg = _random_resized_crop(rng, clutter, (0.1, 0.6))
    bg = cv2.resize(bg, (cw, ch), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:  # a plain counter
        bg = np.empty_like(bg)
        bg[:] = rng.integers(0, 256, 3)
        bg = np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8)
    y, x = rng.integers(0, ch - ih + 1), rng.integers(0, cw - iw + 1)
    region = bg[y : y + ih, x : x + iw]
    soft = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[..., None]
    bg[y : y + ih, x : x + iw] = (item * soft + region * (1 - soft)).astype(np.uint8)
    return bg


def _motion_blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A linear blur along a random direction: an item moved across the camera during the exposure."""
    length = int(rng.integers(3, 10))
    line = np.zeros((length, length), np.float32)
    line[length // 2, :] = 1.0
    m = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = np.asarray(cv2.warpAffine(line, m, (length, length)), np.float32)
    return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))


def _partial_view(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Cut 15-40 % off one side: an item entering the frame, or a box that caught only part of it."""
    h, w = img.shape[:2]
    cut = rng.uniform(0.15, 0.4)
    side = rng.integers(4)
    if side == 0:
        return img[int(h * cut) :]
    if side == 1:
        return img[: h - int(h * cut)]
    if side == 2:
        return img[:, int(w * cut) :]
    return img[:, : w - int(w * cut)]


def augment(
    rng: np.random.Generator,
    img: np.ndarray,
    is_iconic: bool,
    clutter: np.ndarray,
    size: int,
    *,
    video: bool = False,
) -> np.ndarray:
    """One training crop (uint8 [size, size, 3] BGR) from a photo or a packshot. ``video`` adds what a
    moving camera does to crops: motion blur, partial views cut by the frame edge, small crops."""
    if is_iconic and rng.random() < 0.8:
        img = _packshot_on_clutter(rng, img, clutter)
    img = _random_resized_crop(rng, img, (0.35, 1.0) if not is_iconic else (0.6, 1.0))
    if video and rng.random() < 0.25:
        img = _partial_view(rng, img)
    if rng.random() < 0.5:
        img = _rotate(rng, img, 180 if rng.random() < 0.5 else 25)
    if rng.random() < 0.3:
        img = _hand_blob(rng, img)
    img = _colour(rng, img)
    img = _degrade(rng, img)
    if video and rng.random() < 0.2:
        img = _motion_blur(rng, img)
    if video and rng.random() < 0.15:  # a small, far-away item: few pixels, upsampled by the letterbox
        f = rng.uniform(0.25, 0.5)
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    return letterbox(img, size)
