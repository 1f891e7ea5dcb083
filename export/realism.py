"""Realistic training composites for the segmenter: what a real checkout camera sees that is not an item.

On top of CompositeMaker's products and counters, a realistic composite adds, from real data:
- real hand cutouts (pixel masks of the hands TRAIN split only, ``HANDS_TRAIN``), pasted over the
  counter and over items (holding them): labelled background;
- photographic backgrounds: whole desk photos of that split (hand and sleeve included: background)
  and frames of real video clips;
- items textured with crops of real grocery photos (so an item interior has the edges of printed
  panels, caps and labels of other colours, and stays one item);
and procedural realism: wood grain, hard cast shadows (the item's own silhouette under one lamp, and
shadows of things out of view; never items), items cut by the frame's edge, printed packaging on items
(panels, logo discs, barcodes, words), caps and end bands of another colour and clear bodies that show
the counter (each still one item), specular highlights, and printed text overlays such as a camera's
timestamp (drawn over the frame, labels unchanged).

The validation sets (hands VALIDATION split, real/topdown-products) are never read here.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from export.composites import (
    Composite,
    CompositeMaker,
    _camera,
    _drop_specks,
    background,
    hand_sprite,
    mask_sprite,
    procedural_sprite,
    targets,
)
from stream.synthetic.scene import Sprite, paste, warp_sprite

log = logging.getLogger(__name__)

# The hands TRAIN split (data README): (set, first, last) numbered stems. The rest is validation.
HANDS_TRAIN = (("egohands", 1, 10), ("desk", 51, 75))
CLIP_FRAMES = 12  # frames read from each real clip as photographic backgrounds
TEXTURE_SIDE = 160


@dataclass
class Assets:
    """Real pixels for realistic composites (all uint8 BGR)."""

    hands: list[Sprite] = field(default_factory=list)
    photo_backgrounds: list[np.ndarray] = field(default_factory=list)
    textures: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "hand_cutouts": len(self.hands),
            "photo_backgrounds": len(self.photo_backgrounds),
            "item_textures": len(self.textures),
        }


def _numbered(folder: Path, lo: int, hi: int) -> list[Path]:
    return sorted(p for p in folder.glob("*.jpg") if p.stem.isdigit() and lo <= int(p.stem) <= hi)


def hand_cutouts(image: np.ndarray, mask: np.ndarray, min_frac: float = 0.004) -> list[Sprite]:
    """Each sizeable connected hand of a {0, 255} mask as a sprite (the hand's own pixels)."""
    m = (mask > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] >= min_frac * m.size:
            out.append(mask_sprite(image, (labels == k).astype(np.uint8)))
    return out


def load_hands_train(hands_root: Path) -> tuple[list[Sprite], list[np.ndarray]]:
    """(hand cutouts, whole desk photos) from the TRAIN split of real/hands only."""
    sprites: list[Sprite] = []
    photos: list[np.ndarray] = []
    for name, lo, hi in HANDS_TRAIN:
        for p in _numbered(hands_root / name / "images", lo, hi):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            mask = cv2.imread(str(hands_root / name / "masks" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE)
            if img is None or mask is None:
                continue
            sprites += hand_cutouts(img, mask)
            if name == "desk":
                photos.append(img)
    return sprites, photos


def clip_frames(clips: Sequence[Path], n: int = CLIP_FRAMES) -> list[np.ndarray]:
    out = []
    for clip in clips:
        cap = cv2.VideoCapture(str(clip))
        frames: list[np.ndarray] = []
        while len(frames) < 400:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        out += [frames[i] for i in np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)] if frames else []
    return out


def load_textures(photos: Sequence[Path], limit: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``limit`` real product photos, centre-cropped to 80% and shrunk to TEXTURE_SIDE."""
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(photos))[:limit] if photos else np.zeros(0, np.int64)
    out = []
    for i in picks:
        img = cv2.imread(str(photos[int(i)]), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        c = img[h // 10 : h - h // 10, w // 10 : w - w // 10]
        out.append(cv2.resize(c, (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_AREA))
    return out


def load_assets(data_root: Path, products: Sequence[str] = (), n_textures: int = 400) -> Assets:
    """Assets from ../shared/data: hands TRAIN split, clips, grocery-store train photos of
    ``products`` (all products when empty). Missing folders give empty lists (logged)."""
    assets = Assets()
    hands = data_root / "real" / "hands"
    if hands.is_dir():
        assets.hands, desk = load_hands_train(hands)
        assets.photo_backgrounds += desk
    clips = sorted((data_root / "clips").glob("*.mp4")) + sorted((data_root / "clips").glob("*.gif"))
    assets.photo_backgrounds += clip_frames(clips)
    train = data_root / "grocery-store" / "train"
    if train.is_dir():
        keep = set(products)
        photos = sorted(
            p for d in train.iterdir() if d.is_dir() and (not keep or d.name in keep) for p in d.glob("*.jpg")
        )
        assets.textures = load_textures(photos, n_textures)
    log.info("realistic composites: %s", assets.summary())
    return assets


# --------------------------------------------------------------------------- procedural realism


def wood(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Photographic-looking wood: warped grain lines, plank seams, a random tone and direction."""
    side = int(math.hypot(width, height)) + 2
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    warp = cv2.resize(
        rng.normal(0, 1, (6, 6)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC
    ) * rng.uniform(4, 20)
    freq = rng.uniform(0.15, 0.6)
    grain = np.sin((yy + warp + 3 * np.sin(xx / rng.uniform(20, 80))) * freq)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (side, side)).astype(np.float32), (0, 0), sigmaX=6.0, sigmaY=0.6)
    t: np.ndarray = 0.5 + 0.25 * grain + 0.12 * fine / max(1e-6, float(fine.std()))
    plank = int(rng.integers(30, 140))
    t[(yy.astype(np.int32) % plank) < 1] *= 0.5
    dark = np.array([rng.uniform(10, 45), rng.uniform(20, 60), rng.uniform(30, 90)], np.float32)
    light = dark * rng.uniform(1.6, 2.8)
    img = dark + (light - dark) * t[..., None].clip(0, 1)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(0, 180)), 1.0)
    img = cv2.warpAffine(img, rot, (side, side), borderMode=cv2.BORDER_REFLECT)
    y0, x0 = (side - height) // 2, (side - width) // 2
    return img[y0 : y0 + height, x0 : x0 + width].clip(0, 255).astype(np.uint8)


def hard_shadow(rng: np.random.Generator, image: np.ndarray) -> None:
    """Darken a large random polygon with a sharp (or slightly soft) edge, in place."""
    h, w = image.shape[:2]
    cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
    k = int(rng.integers(3, 8))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    r = rng.uniform(0.2, 0.9, k) * max(h, w)
    pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).astype(np.int32)
    poly = np.zeros((h, w), np.float32)
    cv2.fillPoly(poly, [pts], 1.0)
    m = cv2.GaussianBlur(poly, (0, 0), rng.uniform(0.3, 3.0))
    dark = rng.uniform(0.35, 0.75)
    image[:] = (image * (1 - (1 - dark) * m[..., None])).clip(0, 255).astype(np.uint8)


def text_overlay(rng: np.random.Generator, image: np.ndarray) -> None:
    """A camera-style caption (timestamp, app name) in a corner, or printed words anywhere."""
    h, w = image.shape[:2]
    chars = string.ascii_letters + string.digits + " :-/."
    text = "".join(chars[int(i)] for i in rng.integers(0, len(chars), int(rng.integers(6, 40))))
    scale = rng.uniform(0.2, 0.5) * w / 256
    color = (255, 255, 255) if rng.random() < 0.6 else tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.7:
        org = (int(rng.integers(0, 6)), int(rng.integers(6, 14)) if rng.random() < 0.5 else h - 3)
    else:
        org = (int(rng.integers(0, w // 2)), int(rng.integers(10, h)))
    if rng.random() < 0.5:
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def highlight(rng: np.random.Generator, image: np.ndarray, inst: np.ndarray) -> None:
    """A specular highlight (a soft bright blob) on one item, in place."""
    ys, xs = np.nonzero(inst)
    if len(ys) == 0:
        return
    j = int(rng.integers(len(ys)))
    blob = np.zeros(inst.shape, np.float32)
    axes = (int(rng.integers(2, 12)), int(rng.integers(2, 6)))
    cv2.ellipse(blob, (int(xs[j]), int(ys[j])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    blob = cv2.GaussianBlur(blob, (0, 0), 2.0) * (inst > 0) * rng.uniform(0.4, 0.9)
    image[:] = (image + (255 - image.astype(np.float32)) * blob[..., None]).astype(np.uint8)


def darken(image: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Multiply ``image`` by (1 - alpha) where ``alpha`` lands with its top-left at (x, y), in place."""
    h, w = alpha.shape
    ih, iw = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * (1.0 - a)).astype(np.uint8)


def _contrast_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A packaging colour: often saturated, sometimes white, black or a pale panel colour."""
    u = rng.random()
    if u < 0.2:
        v = int(rng.integers(200, 256))
        return (v, v, v)
    if u < 0.35:
        v = int(rng.integers(0, 50))
        return (v, v, v)
    hsv = np.array([[[rng.integers(0, 180), rng.integers(80, 256), rng.integers(90, 256)]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def printed_panels(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Packaging print on an item (in place on a copy): panels of another colour, a white
    nutrition panel with lines of text, a bold logo disc, a barcode, words. Inner colour edges
    the segmenter must not take for item outlines: the whole shape stays one item."""
    out = np.ascontiguousarray(img).copy()
    h, w = alpha.shape
    if h < 12 or w < 12:
        return out
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.random()
        col = _contrast_colour(rng)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind < 0.35:  # a rectangular panel, maybe rotated
            bw, bh = int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.1, 0.6))
            box = cv2.boxPoints(((cx, cy), (bw, bh), float(rng.uniform(-30, 30)) if rng.random() < 0.4 else 0.0))
            cv2.fillPoly(out, [box.astype(np.int32)], col, cv2.LINE_AA)
            if rng.random() < 0.5:  # text lines on the panel
                tcol = (0, 0, 0) if sum(col) > 380 else (255, 255, 255)
                for k in range(int(rng.integers(1, 6))):
                    y = int(cy - bh / 2 + (k + 1) * bh / 7)
                    cv2.line(out, (int(cx - bw / 2.5), y), (int(cx + bw / 2.5 * rng.uniform(0.3, 1)), y), tcol, 1)
        elif kind < 0.55:  # a logo disc, sometimes with rings
            r = int(min(h, w) * rng.uniform(0.1, 0.35)) + 1
            cv2.circle(out, (cx, cy), r, col, -1, cv2.LINE_AA)
            for rr in range(r - max(2, r // 3), 1, -max(2, r // 3)):
                cv2.circle(out, (cx, cy), rr, _contrast_colour(rng), max(1, r // 6), cv2.LINE_AA)
        elif kind < 0.7:  # a barcode
            bw, bh = int(w * rng.uniform(0.2, 0.5)) + 2, int(h * rng.uniform(0.08, 0.25)) + 2
            x0, y0 = max(0, cx - bw // 2), max(0, cy - bh // 2)
            out[y0 : y0 + bh, x0 : x0 + bw] = 255
            for x in range(x0 + 1, min(w, x0 + bw - 1)):
                if rng.random() < 0.45:
                    out[y0 + 1 : y0 + bh - 1, x] = 0
        elif kind < 0.85:  # a diagonal or curved band
            p0 = (int(rng.integers(-w // 2, w)), 0)
            p1 = (int(rng.integers(0, w + w // 2)), h)
            cv2.line(out, p0, p1, col, int(rng.integers(2, max(3, min(h, w) // 3))), cv2.LINE_AA)
        else:  # big words
            word = "".join(chr(65 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 8))))
            cv2.putText(
                out,
                word,
                (int(rng.integers(0, max(1, w // 3))), cy),
                cv2.FONT_HERSHEY_SIMPLEX,
                w / rng.uniform(60, 160),
                col,
                max(1, int(w / rng.uniform(30, 80))),
                cv2.LINE_AA,
            )
    return out


def capped(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A cap, lid or end band of another colour (often black, white or a bold colour) at one end
    of the item, with a thin dark seam: still the same item."""
    out = np.ascontiguousarray(img).copy()
    h, w = alpha.shape
    n = max(2, int(h * rng.uniform(0.08, 0.3)))
    col = np.array(_contrast_colour(rng), np.float32)
    yy = np.arange(n, dtype=np.float32)[:, None, None]
    ridge = 1.0 + 0.15 * np.sin(np.arange(w, dtype=np.float32) / rng.uniform(1.5, 4))[None, :, None]
    cap = (col * (0.85 + 0.3 * yy / n) * ridge).clip(0, 255)
    if rng.random() < 0.5:
        out[:n] = cap.astype(np.uint8)
        out[n : n + 1] = (out[n : n + 1] * 0.4).astype(np.uint8)
    else:
        out[h - n :] = cap[::-1].astype(np.uint8)
        out[h - n - 1 : h - n] = (out[h - n - 1 : h - n] * 0.4).astype(np.uint8)
    return out


def grain(rng: np.random.Generator, image: np.ndarray) -> None:
    """Fine directional wood-like grain and sensor grain over the counter, in place."""
    h, w = image.shape[:2]
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    blur = cv2.GaussianBlur(noise, (0, 0), sigmaX=rng.uniform(2, 8), sigmaY=rng.uniform(0.3, 1.0))
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 180)), 1.0)
    n = cv2.warpAffine(blur, rot, (w, h), borderMode=cv2.BORDER_REFLECT) / max(1e-6, float(blur.std()))
    amp = rng.uniform(4, 18)
    image[:] = (image.astype(np.float32) + amp * n[..., None]).clip(0, 255).astype(np.uint8)


def hard_cast_shadow(
    rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, x: int, y: int, *, light: tuple[float, float]
) -> None:
    """The item's own silhouette, offset away from the light, darkened with a sharp edge (a
    lamp above the counter), stretched a little; the shadow is background."""
    ah, aw = alpha.shape
    reach = max(ah, aw) * rng.uniform(0.05, 0.3)
    dx, dy = int(light[0] * reach), int(light[1] * reach)
    s = rng.uniform(1.0, 1.15)
    a = cv2.resize(alpha, (max(1, int(aw * s)), max(1, int(ah * s))), interpolation=cv2.INTER_LINEAR)
    sharp = rng.uniform(0.3, 1.5) if rng.random() < 0.7 else rng.uniform(2.0, 6.0)
    a = cv2.GaussianBlur((a > 0.5).astype(np.float32), (0, 0), sharp) * rng.uniform(0.35, 0.75)
    darken(image, a, x + dx, y + dy)


def metal_part(rng: np.random.Generator) -> Sprite:
    """A grey, low-saturation item: a steel rod, bolt, tube or tin seen from above (long and thin
    or squat), with a specular streak along it and a head or cap at one end."""
    w = int(rng.integers(8, 40))
    h = int(w * rng.uniform(1.5, 12.0))
    grey = rng.uniform(70, 200)
    tint = rng.uniform(0.9, 1.1, 3) * grey
    xx = np.linspace(-1, 1, w, dtype=np.float32)
    shade = (
        0.55 + 0.45 * np.cos(xx * rng.uniform(1.0, 1.6)) + 0.35 * np.exp(-(((xx - rng.uniform(-0.5, 0.5)) / 0.15) ** 2))
    )
    img = (np.tile(shade[None, :, None], (h, 1, 1)) * tint[None, None, :]).clip(0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:  # a head wider than the shank
        head = max(2, int(h * rng.uniform(0.04, 0.12)))
        shank = max(2, int(w * rng.uniform(0.55, 0.8)))
        x0 = (w - shank) // 2
        mask[head:, x0 : x0 + shank] = 1.0
        mask[:head] = 1.0
    else:
        cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1.0, -1)
        mask[h // 8 : h - h // 8] = np.maximum(mask[h // 8 : h - h // 8], 1.0)
    return img, mask


HANDS_SHARE = 0.6  # default share of realistic composites with 1-2 hands in view


def relight_skin(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A hand under another light or camera: hue shifted a little, saturation and brightness
    scaled (pale, tanned, over- and under-exposed skin)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-10, 10)) % 180
    hsv[..., 1] *= rng.uniform(0.5, 1.5)
    hsv[..., 2] *= rng.uniform(0.65, 1.3)
    return cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


class RealisticMaker(CompositeMaker):
    """CompositeMaker whose composites are, with probability ``share``, realistic ones (see module
    docstring); the rest are CompositeMaker's own, so synthetic skills are kept."""

    def __init__(
        self,
        sprites: Sequence[Sprite],
        assets: Assets,
        size: tuple[int, int] = (192, 256),
        *,
        share: float = 0.6,
        metal_share: float = 0.0,
        hands_share: float = HANDS_SHARE,
        **kw: object,
    ) -> None:
        super().__init__(sprites, size, **kw)  # type: ignore[arg-type]
        self.assets = assets
        self.share = share
        self.metal_share = metal_share  # grey low-contrast items (steel parts, tins): see metal_part
        self.hands_share = hands_share  # realistic composites with 1-2 hands in view

    def _real_background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        if self.backgrounds and rng.random() < 0.8:
            return super()._background(rng)
        u = rng.random()
        if self.assets.photo_backgrounds and u < 0.35:
            src = self.assets.photo_backgrounds[int(rng.integers(len(self.assets.photo_backgrounds)))]
            bh, bw = src.shape[:2]
            s = rng.uniform(0.5, 1.0)
            ch, cw = int(bh * s), int(min(bw, bh * s * w / h))
            y, x = int(rng.integers(0, bh - ch + 1)), int(rng.integers(0, bw - cw + 1))
            crop = src[y : y + ch, x : x + cw]
            if rng.random() < 0.5:
                crop = crop[::-1] if rng.random() < 0.5 else crop[:, ::-1]
            return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        if u < 0.7:
            return wood(rng, w, h)
        return background(rng, w, h, self.styles)

    def _textured(self, rng: np.random.Generator) -> Sprite:
        """A procedural item shape filled with a real photo crop, sometimes with a cap or band of
        another colour; the whole shape is one item."""
        img, alpha = procedural_sprite(rng)
        h, w = alpha.shape
        tex = self.assets.textures[int(rng.integers(len(self.assets.textures)))]
        th, tw = tex.shape[:2]
        s = rng.uniform(0.4, 1.0)
        ch, cw = max(4, int(th * s)), max(4, int(tw * s))
        y, x = int(rng.integers(0, th - ch + 1)), int(rng.integers(0, tw - cw + 1))
        fill = cv2.resize(tex[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            cap = int(h * rng.uniform(0.08, 0.25))
            fill[:cap] = img[:cap] if rng.random() < 0.5 else rng.integers(0, 256, 3)
        return fill, alpha

    def _real_item(self, rng: np.random.Generator) -> Sprite:
        u = rng.random()
        if self.metal_share and rng.random() < self.metal_share:
            img, alpha = metal_part(rng)
        elif self.assets.textures and u < 0.45:
            img, alpha = self._textured(rng)
        elif self.sprites and u < 0.85:
            img, alpha = self.sprites[int(rng.integers(len(self.sprites)))]
        else:
            img, alpha = procedural_sprite(rng)
        if rng.random() < 0.5:
            img = printed_panels(rng, img, alpha)
        if rng.random() < 0.3:
            img = capped(rng, img, alpha)
        gain = rng.uniform(0.6, 1.25)
        img = (img.astype(np.float32) * gain + rng.uniform(-20, 20)).clip(0, 255).astype(np.uint8)
        long_side = self.size[0] * rng.uniform(0.15, 0.95)
        s = long_side / max(alpha.shape)
        size = (max(4, round(alpha.shape[1] * s)), max(4, round(alpha.shape[0] * s)))
        img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_AREA)
        return warp_sprite((img, alpha), float(rng.uniform(0, 360)), 1.0)

    def _hand(self, rng: np.random.Generator) -> Sprite:
        h, w = self.size
        if self.assets.hands and rng.random() < 0.75:
            img, alpha = self.assets.hands[int(rng.integers(len(self.assets.hands)))]
            s = h * rng.uniform(0.3, 1.1) / max(alpha.shape)
            size = (max(4, round(alpha.shape[1] * s)), max(4, round(alpha.shape[0] * s)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
            tone = rng.uniform(0.85, 1.15, 3).astype(np.float32)
            img = (img * tone).clip(0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                img = relight_skin(rng, img)
            return warp_sprite((img, alpha), float(rng.uniform(0, 360)), 1.0)
        return warp_sprite(hand_sprite(rng, int(w * rng.uniform(0.4, 0.9))), float(rng.uniform(0, 360)), 1.0)

    def _edge_cut(self, rng: np.random.Generator, alpha: np.ndarray, x: int, y: int) -> tuple[int, int]:
        """With probability 0.3, move the item so the frame's edge cuts it; else keep (x, y)."""
        if rng.random() >= 0.3:
            return x, y
        h, w = self.size
        ah, aw = alpha.shape
        side = int(rng.integers(4))
        cut = rng.uniform(0.1, 0.5)
        if side == 0:
            return -int(aw * cut), y
        if side == 1:
            return w - int(aw * (1 - cut)), y
        if side == 2:
            return x, -int(ah * cut)
        return x, h - int(ah * (1 - cut))

    def _put_item(
        self, rng: np.random.Generator, image: np.ndarray, inst: np.ndarray, k: int, light: tuple[float, float]
    ) -> None:
        """Item ``k``: its shadow (hard, under the composite's lamp, or soft), then the item, at
        times with a clear body that shows the counter; written into ``inst``."""
        sprite = self._real_item(rng)
        x, y = self._edge_cut(rng, sprite[1], *self._place(rng, inst, sprite[1]))
        u = rng.random()
        if u < 0.5:
            hard_cast_shadow(rng, image, sprite[1], x, y, light=light)
        elif u < 0.75:
            off = (int(rng.integers(-15, 16)), int(rng.integers(-15, 16)))
            soft = cv2.GaussianBlur(sprite[1], (0, 0), rng.uniform(0.5, 4.0)) * rng.uniform(0.3, 0.7)
            darken(image, soft, x + off[0], y + off[1])
        before = image.copy() if rng.random() < 0.12 else None
        placed = paste(image, sprite, x, y)
        if placed is None:
            return
        rows, cols, a = placed
        if before is not None:  # a clear jar or bottle: the counter shows through its body
            body = cv2.erode((a > 0.5).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(np.float32)
            t = cv2.GaussianBlur(body, (0, 0), 1.5)[..., None] * rng.uniform(0.3, 0.7)
            region = image[rows, cols].astype(np.float32)
            image[rows, cols] = (region * (1 - t) + before[rows, cols] * t * 0.85).astype(np.uint8)
        inst[rows, cols][a > 0.5] = k

    def _put_hands(self, rng: np.random.Generator, image: np.ndarray, inst: np.ndarray) -> None:
        """0-2 hands (background), half of them over an item as if holding it."""
        h, w = self.size
        for _ in range(int(rng.integers(1, 3)) if rng.random() < self.hands_share else 0):
            hand = self._hand(rng)
            ys, xs = np.nonzero(inst)
            ah, aw = hand[1].shape
            if len(ys) and rng.random() < 0.5:
                j = int(rng.integers(len(ys)))
                hx, hy = int(xs[j]) - aw // 2, int(ys[j]) - ah // 2
            else:
                hx, hy = int(rng.integers(-aw // 2, w - aw // 2)), int(rng.integers(-ah // 2, h - ah // 2))
            placed = paste(image, hand, hx, hy, shadow=float(rng.uniform(0, 0.4)))
            if placed is not None:
                rows, cols, a = placed
                inst[rows, cols][a > 0.5] = 0

    def make(self, seed: int) -> Composite:
        rng = np.random.default_rng(seed)
        if rng.random() >= self.share:
            return super().make(seed + 1)
        h, w = self.size
        image = self._real_background(rng)
        inst = np.zeros((h, w), np.int32)
        if rng.random() < 0.4:
            grain(rng, image)
        ang = rng.uniform(0, 2 * np.pi)
        light = (math.cos(ang), math.sin(ang))  # one lamp per composite: shadows fall the same way
        n = int(rng.integers(0, 6)) if rng.random() > 0.1 else 0
        if n and rng.random() < 0.3:
            n = 1  # a lone product, as on a top-down counter camera
        for k in range(1, n + 1):
            self._put_item(rng, image, inst, k, light)
        if rng.random() < 0.3:
            highlight(rng, image, inst)
        self._put_hands(rng, image, inst)
        for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.45 else 0):
            hard_shadow(rng, image)
        if rng.random() < 0.4:
            text_overlay(rng, image)
        inst = _drop_specks(inst)
        return Composite(_camera(rng, image), targets(inst), inst)
