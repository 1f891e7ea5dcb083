"""Training composites for the segmenter: products pasted on procedural counters, with targets.

Items come from three sources: the iconic grocery packshots cut out of their white background, the
procedural demo products of stream/scene.py, and random procedural bottles/cans/boxes/produce. They
are pasted at random scale/rotation, often touching or overlapping (the occluder's mask wins), under
shadows and uneven light, sometimes with a hand or arm on top (a distractor: labelled background),
then blurred/noised/JPEG-compressed like a camera frame.

Targets, at the composite's (= the model's) resolution: classes 0 = background, 1 = item interior,
2 = item boundary (a band ``BAND`` px wide inside each instance's outline, so two touching items are
separated by boundary pixels), and the instance map (0 = none, k = item k) for evaluation.
Every composite is a pure function of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.synthetic.scene import DEMO_PRODUCTS, Sprite, counter_texture, paste, product_sprite, warp_sprite

BAND = 2  # boundary band width in model pixels
TRAIN_STYLES = ("wood", "steel", "laminate", "belt", "plain", "mottled", "stripes")
HELDOUT_STYLES = ("granite", "tiles")  # never seen in training: a check that the model learnt items


@dataclass(frozen=True)
class Composite:
    """image: uint8 [H, W, 3] BGR; classes: uint8 [H, W] (0 bg, 1 item, 2 boundary);
    instances: int32 [H, W] (0 = none, k = item k)."""

    image: np.ndarray
    classes: np.ndarray
    instances: np.ndarray


# --------------------------------------------------------------------------- item sources


def product_mask(image: np.ndarray, white: int = 246) -> np.ndarray | None:
    """The product of a packshot on white, as a uint8 {0,1} mask of the image's size: non-white
    pixels, closed, holes filled, largest component; a nearly convex result becomes its convex hull,
    because white packaging on a white background leaves bites in the outline. None when nothing
    sizeable is left (not on white)."""
    fg = (cv2.GaussianBlur(image, (3, 3), 0).min(axis=2) < white).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == k).astype(np.uint8)
    # Fill holes: everything the border cannot reach through background belongs to the product.
    flood = np.pad(1 - mask, 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    mask = (flood[1:-1, 1:-1] != 2).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    if mask.sum() > 0.85 * cv2.contourArea(hull):
        cv2.fillPoly(mask, [hull], 1)
    area = int(mask.sum())
    if area < 0.03 * mask.size or area > 0.985 * mask.size:
        return None
    return mask


def mask_sprite(image: np.ndarray, mask: np.ndarray) -> Sprite:
    """The pixels under a {0,1} ``mask`` as a sprite: cropped to the mask's box, with a soft alpha
    that is 0 outside the mask."""
    x, y, w, h = cv2.boundingRect(mask)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[y : y + h, x : x + w] * mask[y : y + h, x : x + w]
    return image[y : y + h, x : x + w].copy(), alpha


def cutout(image: np.ndarray, white: int = 246) -> Sprite | None:
    """A packshot's product as a sprite; None when the photo is not a product on white (see
    product_mask)."""
    mask = product_mask(image, white)
    return None if mask is None else mask_sprite(image, mask)


def rect_sprite(image: np.ndarray) -> Sprite:
    """A photo not on white becomes a rectangular item."""
    return image.copy(), np.ones(image.shape[:2], np.float32)


def load_sprites(paths: Sequence[Path]) -> list[Sprite]:
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image {p} (expected a JPEG/PNG product photo)")
        out.append(cutout(img) or rect_sprite(img))
    return out


def image_files(folder: Path) -> list[Path]:
    """JPEG/PNG files under ``folder`` (recursively), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))


def default_iconic_dir() -> Path:
    """../shared/data/grocery-store/iconic relative to the repository root."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grocery-store" / "iconic"


def split_iconic(iconic_dir: Path, every: int = 7) -> tuple[list[Path], list[Path]]:
    """(train, held-out) product images: every ``every``-th (sorted by path) is held out."""
    paths = image_files(Path(iconic_dir))
    if not paths:
        raise FileNotFoundError(f"no product images (*.jpg, *.png) in {iconic_dir}")
    held = paths[every // 2 :: every]
    return [p for p in paths if p not in held], held


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def procedural_sprite(rng: np.random.Generator) -> Sprite:
    """A random bottle, can, box, bag or piece of produce (drawn from above), ~60-160 px."""
    kind = ("bottle", "can", "box", "produce", "bag")[int(rng.integers(5))]
    w, h = int(rng.integers(40, 90)), int(rng.integers(70, 170))
    if kind == "produce":
        w = h = int(rng.integers(40, 110))
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = _color(rng)
    mask = np.zeros((h, w), np.uint8)
    if kind == "bottle":
        neck = max(6, w // 4)
        cv2.rectangle(mask, (0, h // 3), (w - 1, h - 1), 255, -1)
        cv2.ellipse(mask, (w // 2, h // 3), (w // 2 - 1, h // 8), 0, 180, 360, 255, -1)
        cv2.rectangle(mask, (w // 2 - neck // 2, 0), (w // 2 + neck // 2, h // 3), 255, -1)
        img[: h // 10] = _color(rng)
    elif kind == "can":
        cv2.rectangle(mask, (0, 3), (w - 1, h - 4), 255, -1)
        cv2.ellipse(mask, (w // 2, 4), (w // 2 - 1, 4), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (w // 2, h - 5), (w // 2 - 1, 4), 0, 0, 360, 255, -1)
    elif kind == "produce":
        cv2.ellipse(
            mask,
            (w // 2, h // 2),
            (w // 2 - 1, int(h / 2 * rng.uniform(0.6, 1)) - 1),
            float(rng.uniform(0, 180)),
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
        )
    elif kind == "bag":
        pts = np.stack(
            [
                w / 2 + (w / 2 - 1) * np.cos(a) * rng.uniform(0.75, 1.0)
                for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)
            ],
            0,
        )
        ys = np.stack(
            [
                h / 2 + (h / 2 - 1) * np.sin(a) * rng.uniform(0.75, 1.0)
                for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)
            ],
            0,
        )
        cv2.fillPoly(mask, [np.stack([pts, ys], 1).astype(np.int32)], 255, cv2.LINE_AA)
    else:
        mask[:] = 255
    for _ in range(int(rng.integers(0, 4))):  # bands, stripes and a word, like packaging
        y0 = int(rng.integers(0, h))
        cv2.rectangle(img, (0, y0), (w, y0 + int(rng.integers(3, max(4, h // 4)))), _color(rng), -1)
    if kind != "produce" and rng.random() < 0.7:
        word = "".join(chr(65 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 6))))
        cv2.putText(
            img,
            word,
            (2, int(h * rng.uniform(0.3, 0.9))),
            cv2.FONT_HERSHEY_SIMPLEX,
            w / 110,
            _color(rng),
            max(1, w // 40),
            cv2.LINE_AA,
        )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.2 - 0.6 * np.hypot((xx - w * 0.35) / w, (yy - h * 0.35) / h)
    img = (img * shade[..., None]).clip(0, 255).astype(np.uint8)
    return img, mask.astype(np.float32) / 255.0


def hand_sprite(rng: np.random.Generator, length: int) -> Sprite:
    """A skin-toned forearm with a hand and fingers, pointing right; a distractor, not an item."""
    w, h = length, max(20, length // 3)
    mask = np.zeros((h, w), np.uint8)
    arm = h // 3
    cv2.rectangle(mask, (0, h // 2 - arm // 2), (int(w * 0.6), h // 2 + arm // 2), 255, -1)
    palm = (int(w * 0.68), h // 2)
    cv2.ellipse(mask, palm, (int(w * 0.1), int(h * 0.3)), 0, 0, 360, 255, -1, cv2.LINE_AA)
    for i in range(4):
        y = int(h * (0.28 + 0.15 * i))
        cv2.line(mask, (palm[0], y), (int(w * rng.uniform(0.88, 0.98)), y), 255, max(3, h // 10), cv2.LINE_AA)
    cv2.line(mask, palm, (int(w * 0.8), int(h * 0.05)), 255, max(3, h // 9), cv2.LINE_AA)  # thumb
    tone = np.array([rng.uniform(60, 170), rng.uniform(90, 190), rng.uniform(140, 240)], np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = tone
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    img *= 0.8 + 0.3 * np.cos((yy - h / 2) / h * math.pi)
    sleeve = int(w * rng.uniform(0.0, 0.4))
    img[:, :sleeve] = _color(rng)
    return img.clip(0, 255).astype(np.uint8), mask.astype(np.float32) / 255.0


# --------------------------------------------------------------------------- backgrounds


def background(rng: np.random.Generator, width: int, height: int, styles: Sequence[str] = TRAIN_STYLES) -> np.ndarray:
    """A counter surface, sometimes split into two materials (belt and counter) with a rail."""
    style = styles[int(rng.integers(len(styles)))]
    bg = _surface(rng, width, height, style)
    if rng.random() < 0.5:
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        if y1 - y0 > 4:
            bg[y0:y1] = _surface(rng, width, y1 - y0, styles[int(rng.integers(len(styles)))])
            bg[y0 : y0 + 2] = _color(rng)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.4 else 0):
        # Flat clutter that is not an item: tape, stickers, printed marks, cables.
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.line(bg, p0, p1, _color(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.putText(bg, "SCAN", p0, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 1.0), _color(rng), 1)
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return (bg * tint).clip(0, 255).astype(np.uint8)


def _surface(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    if style == "plain":
        noise = rng.normal(0, rng.uniform(1, 6), (height, width, 1)).astype(np.float32)
        return (np.array(_color(rng), np.float32) * rng.uniform(0.3, 1.0) + noise).clip(0, 255).astype(np.uint8)
    if style == "mottled":  # smooth two-colour blotches at a random scale
        s = int(rng.integers(4, 40))
        blot = cv2.resize(
            rng.random((height // s + 2, width // s + 2)).astype(np.float32),
            (width, height),
            interpolation=cv2.INTER_CUBIC,
        )[..., None].clip(0, 1)
        a, b = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32) * rng.uniform(0.3, 1)
        return (a * blot + b * (1 - blot)).clip(0, 255).astype(np.uint8)
    if style == "stripes":
        out = np.empty((height, width, 3), np.uint8)
        out[:] = _color(rng)
        step, thick = int(rng.integers(6, 40)), int(rng.integers(1, 5))
        vertical = rng.random() < 0.5
        for v in range(int(rng.integers(0, step)), width if vertical else height, step):
            p0, p1 = ((v, 0), (v, height)) if vertical else ((0, v), (width, v))
            cv2.line(out, p0, p1, _color(rng), thick)
        return out
    if style == "granite":
        layers = [
            cv2.resize(
                rng.random((height // s + 1, width // s + 1)).astype(np.float32),
                (width, height),
                interpolation=cv2.INTER_NEAREST,
            )
            for s in (1, 2, 4)
        ]
        g: np.ndarray = (layers[0] + layers[1] + layers[2]) / 3.0
        base = np.array(rng.uniform(60, 200, 3), np.float32)
        return (base * (0.6 + 0.6 * g[..., None])).clip(0, 255).astype(np.uint8)
    if style == "tiles":
        out = np.empty((height, width, 3), np.uint8)
        out[:] = _color(rng)
        step = int(rng.integers(20, 60))
        out[::step] = 200
        out[:, ::step] = 200
        return out
    return counter_texture(rng, width, height, style)


# --------------------------------------------------------------------------- targets


def targets(instances: np.ndarray, band: int = BAND) -> np.ndarray:
    """Class map from an instance map: 1 inside items, 2 within ``band`` px of an outline (against
    the background or another item), 0 elsewhere."""
    k = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    inst = instances.astype(np.float32)  # exact for ids < 2**24; OpenCV's max/min need float
    edge = cv2.dilate(inst, k) != cv2.erode(inst, k)
    classes = (instances > 0).astype(np.uint8)
    classes[edge & (instances > 0)] = 2
    return classes


# --------------------------------------------------------------------------- composites


class CompositeMaker:
    """Renders composites from a fixed set of item sprites on procedural (or given) backgrounds."""

    def __init__(
        self,
        sprites: Sequence[Sprite],
        size: tuple[int, int] = (192, 256),
        *,
        styles: Sequence[str] = TRAIN_STYLES,
        backgrounds: Sequence[np.ndarray] = (),
        procedural_share: float = 0.25,
        max_items: int = 7,
    ) -> None:
        self.sprites = list(sprites)
        self.size = size
        self.styles = tuple(styles)
        self.backgrounds = list(backgrounds)
        self.procedural_share = procedural_share
        self.max_items = max_items

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        if self.backgrounds and rng.random() < 0.8:
            src = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            bh, bw = src.shape[:2]
            s = rng.uniform(0.6, 1.0)
            ch, cw = int(bh * s), int(bw * s)
            y, x = int(rng.integers(0, bh - ch + 1)), int(rng.integers(0, bw - cw + 1))
            crop = src[y : y + ch, x : x + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        return background(rng, w, h, self.styles)

    def _item(self, rng: np.random.Generator) -> Sprite:
        if not self.sprites or rng.random() < self.procedural_share:
            img, alpha = procedural_sprite(rng)
        else:
            img, alpha = self.sprites[int(rng.integers(len(self.sprites)))]
        if rng.random() < 0.5:
            img, alpha = img[:, ::-1], alpha[:, ::-1]
        gain = rng.uniform(0.75, 1.2)
        img = (img.astype(np.float32) * gain + rng.uniform(-15, 15)).clip(0, 255).astype(np.uint8)
        long_side = self.size[0] * rng.uniform(0.15, 0.6)
        s = long_side / max(alpha.shape)
        size = (max(4, round(alpha.shape[1] * s)), max(4, round(alpha.shape[0] * s)))
        img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_AREA)
        return warp_sprite((img, alpha), float(rng.uniform(0, 360)), 1.0)

    def _place(self, rng: np.random.Generator, inst: np.ndarray, alpha: np.ndarray) -> tuple[int, int]:
        """Top-left for a sprite: anywhere, or slid against an existing item until they touch."""
        h, w = self.size
        ah, aw = alpha.shape
        x, y = int(rng.integers(-aw // 4, w - aw * 3 // 4)), int(rng.integers(-ah // 4, h - ah * 3 // 4))
        ys, xs = np.nonzero(inst)
        if len(ys) == 0 or rng.random() < 0.4:
            return x, y
        j = int(rng.integers(len(ys)))
        tx, ty = xs[j] - aw // 2, ys[j] - ah // 2  # start on top of an item pixel, back away
        ang = rng.uniform(0, 2 * math.pi)
        dx, dy = math.cos(ang), math.sin(ang)
        solid = alpha > 0.5
        # Touching (0-1 px gap) mostly; sometimes overlapping by a few px (the newcomer occludes).
        back = int(rng.integers(1, 8)) if rng.random() < 0.3 else -int(rng.integers(0, 2))
        for step in range(max(h, w)):
            px, py = round(tx + dx * step), round(ty + dy * step)
            if not self._hits(inst, solid, px, py):
                at = max(0, step - back)
                return round(tx + dx * at), round(ty + dy * at)
        return x, y

    @staticmethod
    def _hits(inst: np.ndarray, solid: np.ndarray, x: int, y: int) -> bool:
        h, w = inst.shape
        ah, aw = solid.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + aw, w), min(y + ah, h)
        if x1 <= x0 or y1 <= y0:
            return False
        return bool((inst[y0:y1, x0:x1] > 0)[solid[y0 - y : y1 - y, x0 - x : x1 - x]].any())

    def make(self, seed: int) -> Composite:
        rng = np.random.default_rng(seed)
        h, w = self.size
        image = self._background(rng)
        inst = np.zeros((h, w), np.int32)
        n = int(rng.integers(0, self.max_items + 1)) if rng.random() > 0.05 else 0
        shadow = float(rng.uniform(0.0, 0.5))
        off = (int(rng.integers(-4, 5)), int(rng.integers(0, 6)))
        for k in range(1, n + 1):
            sprite = self._item(rng)
            x, y = self._place(rng, inst, sprite[1])
            placed = paste(image, sprite, x, y, shadow=shadow, shadow_offset=off)
            if placed is not None:
                rows, cols, a = placed
                inst[rows, cols][a > 0.5] = k
        if rng.random() < 0.3:
            hand = warp_sprite(hand_sprite(rng, int(w * rng.uniform(0.4, 0.8))), float(rng.uniform(0, 360)), 1.0)
            hx, hy = int(rng.integers(-w // 4, w * 3 // 4)), int(rng.integers(-h // 4, h * 3 // 4))
            placed = paste(image, hand, hx, hy, shadow=shadow, shadow_offset=off)
            if placed is not None:
                rows, cols, a = placed
                inst[rows, cols][a > 0.5] = 0
        inst = _drop_specks(inst)
        return Composite(_camera(rng, image), targets(inst), inst)


def _drop_specks(inst: np.ndarray, min_px: int = 12) -> np.ndarray:
    """Occlusion can leave slivers of an item; slivers smaller than ``min_px`` become background."""
    ids, counts = np.unique(inst, return_counts=True)
    small = ids[(counts < min_px) & (ids > 0)]
    if len(small) == 0:
        return inst
    out = inst.copy()
    out[np.isin(out, small)] = 0
    return out


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven light, colour cast, blur, sensor noise and JPEG, like a cheap camera."""
    h, w = image.shape[:2]
    light = cv2.resize(rng.uniform(0.65, 1.3, (3, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img: np.ndarray = image.astype(np.float32) * light[..., None] * cast
    if rng.random() < 0.25:
        n = int(rng.integers(3, 8))
        k = np.zeros((n, n), np.float32)
        cv2.line(k, (0, int(rng.integers(n))), (n - 1, int(rng.integers(n))), 1.0, 1)
        img = cv2.filter2D(img, -1, k / k.sum())
    elif rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    img += rng.normal(0, rng.uniform(0, 6), img.shape).astype(np.float32)
    out: np.ndarray = img.clip(0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        out = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    return out


def demo_sprites() -> list[Sprite]:
    return [product_sprite(p) for p in DEMO_PRODUCTS]


def make_batch(maker: CompositeMaker, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, 3], classes uint8 [N, H, W], instances int32 [N, H, W])."""
    comps = [maker.make(int(s)) for s in seeds]
    return (
        np.stack([c.image for c in comps]),
        np.stack([c.classes for c in comps]),
        np.stack([c.instances for c in comps]),
    )
