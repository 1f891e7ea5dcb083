"""Procedural checkout scenes: a counter, products that slide in, rest and leave, with ground truth.

Used by the demo (a synthetic camera with a known answer), by tests, and by export/composites.py for
training data. numpy/OpenCV only. Product sprites and the counter are rendered once per scene; a frame
is then a few affine warps and alpha blends of small patches, so rendering costs a few ms at 640x480.
Everything is a pure function of (seed, frame index): ``render(i)`` gives the same frame every time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stream.synthetic.products import DEMO_PRODUCTS, Sprite, product_sprite, warp_sprite


@dataclass(frozen=True)
class SceneFrame:
    """One rendered frame with its ground truth.

    image: uint8 [H, W, 3] BGR.
    index: 0-based frame number in the scene.
    instance_map: int32 [H, W]: 0 = counter, k = the visible pixels of item k.
    items: (item_key, product_id, (x1, y1, x2, y2)) per visible item; the box (pixels, x2/y2
        exclusive) bounds the item's visible pixels in ``instance_map``.
    """

    image: np.ndarray
    index: int
    instance_map: np.ndarray
    items: tuple[tuple[int, str, tuple[int, int, int, int]], ...]


# --------------------------------------------------------------------------- counters


def counter_texture(rng: np.random.Generator, width: int, height: int, style: str | None = None) -> np.ndarray:
    """A procedural counter surface: wood, brushed steel, laminate or rubber belt (uint8 BGR)."""
    styles = ("wood", "steel", "laminate", "belt")
    style = style or styles[int(rng.integers(len(styles)))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 1.0)
    if style == "wood":
        base = np.array(rng.uniform([40, 80, 120], [90, 140, 200]), np.float32)
        warp = cv2.resize(rng.standard_normal((8, 8)).astype(np.float32), (width, height)) * 12
        grain = np.sin((yy + warp) / rng.uniform(3, 7)) * 0.5 + 0.5
        tex = base * (0.8 + 0.25 * grain[..., None]) + 6 * noise[..., None]
    elif style == "steel":
        streak = cv2.blur(rng.standard_normal((height, width)).astype(np.float32), (41, 1)) * 40
        tex = np.array([rng.uniform(140, 200)] * 3, np.float32) + streak[..., None] + 3 * noise[..., None]
    elif style == "laminate":
        base = np.array(rng.uniform(60, 230, 3), np.float32)
        speck = (rng.random((height, width)) < 0.02).astype(np.float32) * rng.uniform(-50, 50)
        tex = base + (5 * noise + speck)[..., None]
    elif style == "belt":
        g = rng.uniform(25, 70)
        ridges = (np.sin(xx / rng.uniform(3, 6)) > 0.6).astype(np.float32) * 10
        tex = np.array([g, g, g * 1.05], np.float32) + (ridges + 4 * noise)[..., None]
    else:
        raise ValueError(f"unknown counter style '{style}' (valid: {', '.join(styles)})")
    vignette = 1.0 - 0.25 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    return (tex * vignette[..., None]).clip(0, 255).astype(np.uint8)


def paste(
    image: np.ndarray, sprite: Sprite, x: int, y: int, *, shadow: float = 0.0, shadow_offset: tuple[int, int] = (6, 8)
) -> tuple[slice, slice, np.ndarray] | None:
    """Blend ``sprite`` into ``image`` in place with its top-left at (x, y), first darkening a
    blurred, offset copy of its alpha (a soft cast shadow). Returns (rows, cols, alpha) of the
    clipped footprint, or None when nothing lands inside the image."""
    img, alpha = sprite
    h, w = alpha.shape
    ih, iw = image.shape[:2]
    if shadow > 0:
        sx, sy = x + shadow_offset[0], y + shadow_offset[1]
        soft = cv2.GaussianBlur(alpha, (0, 0), 4.0) * shadow
        _blend_region(image, None, soft, sx, sy)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
    if x1 <= x0 or y1 <= y0:
        return None
    return _blend_region(image, img, alpha, x, y)


def _blend_region(
    image: np.ndarray, img: np.ndarray | None, alpha: np.ndarray, x: int, y: int
) -> tuple[slice, slice, np.ndarray] | None:
    h, w = alpha.shape
    ih, iw = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
    if x1 <= x0 or y1 <= y0:
        return None
    rows, cols = slice(y0, y1), slice(x0, x1)
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    dst = image[rows, cols].astype(np.float32)
    if img is None:  # shadow: darken only
        dst *= 1.0 - a[..., None]
    else:
        src = img[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
        dst += (src - dst) * a[..., None]
    image[rows, cols] = dst.astype(np.uint8)
    return rows, cols, a


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class _Item:
    key: int
    product: str
    scale: float
    enter: float  # seconds: starts sliding in from the left edge
    rest: float  # arrives at its rest position
    leave: float  # starts sliding out to the right
    gone: float  # off frame
    y: float  # centre row (constant: items slide along the belt)
    x_rest: float  # centre column at rest
    angle: float  # degrees at rest; it turns a little while sliding
    spin: float
    radius: float  # half the sprite's diagonal, px


def scene_length_frames(fps: float = 30.0, duration_s: float = 60.0) -> int:
    return max(1, int(round(fps * duration_s)))


class CheckoutScene:
    """A deterministic synthetic checkout: items slide in from the left, rest a few seconds (several
    at once, some touching), then slide out to the right, under slowly changing light."""

    def __init__(
        self,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        duration_s: float = 60.0,
        products: Sequence[str] | None = None,
    ) -> None:
        self.seed, self.width, self.height, self.fps = seed, width, height, fps
        self.products = tuple(products) if products is not None else DEMO_PRODUCTS
        if not self.products:
            raise ValueError("CheckoutScene: expected at least one product id, found none")
        self.n_frames = scene_length_frames(fps, duration_s)
        rng = np.random.default_rng(seed)
        self._sprites = {p: product_sprite(p) for p in self.products}
        self._background = self._make_background(rng)
        self._noise = [rng.integers(0, 5, (height, width, 3), dtype=np.uint8) for _ in range(4)]
        self._items = self._schedule(rng, duration_s)
        self._cache: dict[tuple[int, float], Sprite] = {}

    @property
    def scene_length_frames(self) -> int:
        return self.n_frames

    def _make_background(self, rng: np.random.Generator) -> np.ndarray:
        w, h = self.width, self.height
        bg = counter_texture(rng, w, h, ("steel", "wood", "laminate")[int(rng.integers(3))])
        belt_top, belt_bot = int(h * 0.18), int(h * 0.82)
        bg[belt_top:belt_bot] = counter_texture(rng, w, belt_bot - belt_top, "belt")
        for yb in (belt_top, belt_bot - 4):  # belt rails
            bg[yb : yb + 4] = (150, 150, 150)
        return bg

    def _schedule(self, rng: np.random.Generator, duration_s: float) -> list[_Item]:
        items: list[_Item] = []
        t, key = 0.3, 1
        lo, hi = self.height * 0.18, self.height * 0.82
        while t < duration_s - 2.0:
            product = self.products[int(rng.integers(len(self.products)))]
            scale = float(rng.uniform(0.85, 1.1)) * self.height / 480
            sh, sw = self._sprites[product][1].shape
            radius = 0.5 * math.hypot(sh, sw) * scale
            slide = float(rng.uniform(0.8, 1.4))
            stay = float(rng.uniform(2.5, 5.0))
            best: tuple[float, float, float] | None = None
            for _ in range(40):  # rest spot: least overlap with items resting at the same time
                y = float(rng.uniform(lo + radius * 0.6, hi - radius * 0.6))
                x = float(rng.uniform(self.width * 0.2, self.width * 0.8))
                cost = self._overlap(items, (t, t + 2 * slide + stay), x, y, radius)
                if best is None or cost < best[0]:
                    best = (cost, x, y)
            assert best is not None
            _, x, y = best
            items.append(
                _Item(
                    key,
                    product,
                    scale,
                    t,
                    t + slide,
                    t + slide + stay,
                    t + 2 * slide + stay,
                    y,
                    x,
                    float(rng.uniform(-40, 40)),
                    float(rng.uniform(-25, 25)),
                    radius,
                )
            )
            key += 1
            t += float(rng.uniform(0.8, 2.2))
        return items

    @staticmethod
    def _overlap(items: list[_Item], span: tuple[float, float], x: float, y: float, r: float) -> float:
        """How far a disc at (x, y) intrudes into discs of items present in [t0, t1]; a gap of a
        few px is as bad as an overlap of a few px, so neighbours end up either apart or touching."""
        cost = 0.0
        t0, t1 = span
        for it in items:
            if it.gone < t0 or it.enter > t1:
                continue
            d = math.hypot(it.x_rest - x, it.y - y)
            gap = d - (r + it.radius)
            cost += max(0.0, -gap - 0.2 * r)  # discs are loose bounds: a small overlap is touching
            cost += 0.001 * max(0.0, 200 - d)
        return cost

    def _pose(self, it: _Item, t: float) -> tuple[float, float] | None:
        """(x centre, angle) at time t, or None when the item is off stage."""
        if t < it.enter or t >= it.gone:
            return None
        start, end = -0.6 * self.width * 0.25, self.width * 1.15
        if t < it.rest:
            u = (t - it.enter) / (it.rest - it.enter)
            e = 1 - (1 - u) ** 3  # ease out: it slows to a stop
            return start + (it.x_rest - start) * e, it.angle + it.spin * (1 - e)
        if t < it.leave:
            return it.x_rest, it.angle
        u = (t - it.leave) / (it.gone - it.leave)
        return it.x_rest + (end - it.x_rest) * u * u, it.angle - it.spin * u * u

    def render(self, index: int) -> SceneFrame:
        t = index / self.fps
        image = self._background.copy()
        instance_map = np.zeros((self.height, self.width), np.int32)
        drawn: list[tuple[_Item, slice, slice]] = []
        for it in self._items:
            pose = self._pose(it, t)
            if pose is None:
                continue
            x, angle = pose
            cache_key = (it.key, round(angle * 2) / 2)
            sprite = self._cache.get(cache_key)
            if sprite is None:
                sprite = warp_sprite(self._sprites[it.product], cache_key[1], it.scale)
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[cache_key] = sprite
            h, w = sprite[1].shape
            placed = paste(image, sprite, int(round(x - w / 2)), int(round(it.y - h / 2)), shadow=0.45)
            if placed is not None:
                rows, cols, a = placed
                instance_map[rows, cols][a > 0.5] = it.key
                drawn.append((it, rows, cols))
        gain = 1.0 + 0.1 * math.sin(2 * math.pi * t / 17.0) + 0.04 * math.sin(2 * math.pi * t / 3.1)
        image = cv2.convertScaleAbs(image, alpha=gain, beta=-2.0)
        image = cv2.add(image, self._noise[index % 4])
        return SceneFrame(image, index, instance_map, self._visible(instance_map, drawn))

    @staticmethod
    def _visible(
        instance_map: np.ndarray, drawn: list[tuple[_Item, slice, slice]]
    ) -> tuple[tuple[int, str, tuple[int, int, int, int]], ...]:
        out = []
        for it, rows, cols in drawn:
            ys, xs = np.nonzero(instance_map[rows, cols] == it.key)
            if len(ys):
                box = (
                    cols.start + int(xs.min()),
                    rows.start + int(ys.min()),
                    cols.start + int(xs.max()) + 1,
                    rows.start + int(ys.max()) + 1,
                )
                out.append((it.key, it.product, box))
        return tuple(out)

    def frames(self) -> Iterator[SceneFrame]:
        for i in range(self.n_frames):
            yield self.render(i)
