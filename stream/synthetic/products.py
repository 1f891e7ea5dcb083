"""The demo's products, drawn procedurally from above: sprites (BGR + alpha), warps and packshots.

numpy/OpenCV only; used by the rendered scenes, the demo catalog and the training composites.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

Sprite = tuple[np.ndarray, np.ndarray]  # (uint8 BGR [h, w, 3], float32 alpha [h, w] in [0, 1])


def _canvas(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)


def _text(
    img: np.ndarray, s: str, org: tuple[int, int], scale: float, color: tuple[int, int, int], *, thick: int = 2
) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_DUPLEX, scale, color, thick, cv2.LINE_AA)


def _box(
    w: int,
    h: int,
    base: tuple[int, int, int],
    band: tuple[int, int, int],
    *,
    word: str,
    word_color: tuple[int, int, int],
    logo: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    img, m = _canvas(w, h)
    img[:] = base
    cv2.rectangle(img, (0, h * 5 // 8), (w, h * 6 // 8), band, -1)
    cv2.circle(img, (w // 2, h * 7 // 16), min(w, h) // 5, logo, -1, cv2.LINE_AA)
    cv2.circle(img, (w // 2, h * 7 // 16), min(w, h) // 5, (255, 255, 255), 2, cv2.LINE_AA)
    scale = 1.0
    (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
    scale = min(1.0, 0.85 * w / tw)
    (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
    _text(img, word, ((w - tw) // 2, h * 9 // 40 + th // 2), scale, word_color)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), tuple(int(c * 0.6) for c in base), 2)
    m[:] = 255
    return img, m


def _cereal() -> tuple[np.ndarray, np.ndarray]:
    img, m = _box(
        112, 150, (30, 80, 220), (40, 210, 250), word="CRUNCH", word_color=(255, 255, 255), logo=(60, 140, 240)
    )
    for i in range(5):  # flakes in the bowl logo
        cv2.circle(img, (44 + i * 6, 65 + (i % 2) * 4), 3, (80, 190, 250), -1)
    return img, m


def _milk() -> tuple[np.ndarray, np.ndarray]:
    img, m = _box(74, 140, (245, 245, 240), (200, 120, 30), word="MILK", word_color=(200, 90, 20), logo=(230, 180, 120))
    cv2.rectangle(img, (0, 0), (74, 20), (210, 210, 205), -1)  # gable top seen from above
    cv2.line(img, (0, 10), (74, 10), (170, 170, 165), 2)
    for x in range(4, 74, 14):  # cow spots
        cv2.ellipse(img, (x, 128), (5, 3), 0, 0, 360, (40, 40, 40), -1, cv2.LINE_AA)
    return img, m


def _soda() -> tuple[np.ndarray, np.ndarray]:
    w, h = 62, 112
    img, m = _canvas(w, h)
    img[:] = (40, 30, 200)
    pts = np.array([[x, int(h * 0.5 + 14 * math.sin(x / w * 2 * math.pi))] for x in range(0, w + 1, 4)])
    cv2.polylines(img, [pts], False, (255, 255, 255), 6, cv2.LINE_AA)
    _text(img, "COLA", (6, 40), 0.6, (255, 255, 255))
    cv2.rectangle(img, (0, 0), (w, 8), (190, 190, 195), -1)  # lids: the can lies on its side
    cv2.rectangle(img, (0, h - 8), (w, h), (190, 190, 195), -1)
    cv2.rectangle(m, (0, 3), (w - 1, h - 4), 255, -1)
    cv2.ellipse(m, (w // 2, 4), (w // 2 - 1, 4), 0, 180, 360, 255, -1)
    cv2.ellipse(m, (w // 2, h - 5), (w // 2 - 1, 4), 0, 0, 180, 255, -1)
    return img, m


def _bottle() -> tuple[np.ndarray, np.ndarray]:
    w, h = 64, 170
    img, m = _canvas(w, h)
    img[:] = (225, 200, 150)
    cv2.rectangle(m, (4, 50), (w - 5, h - 4), 255, -1)
    cv2.ellipse(m, (w // 2, 52), (w // 2 - 4, 22), 0, 180, 360, 255, -1)
    cv2.rectangle(m, (w // 2 - 11, 10), (w // 2 + 11, 40), 255, -1)
    cv2.rectangle(img, (w // 2 - 12, 0), (w // 2 + 12, 16), (40, 150, 30), -1)  # cap
    cv2.rectangle(m, (w // 2 - 12, 0), (w // 2 + 12, 16), 255, -1)
    cv2.rectangle(img, (4, 85), (w - 5, 130), (60, 170, 40), -1)  # label band
    _text(img, "AQUA", (8, 114), 0.55, (255, 255, 255))
    cv2.line(img, (14, 55), (14, h - 10), (250, 235, 215), 4, cv2.LINE_AA)  # highlight
    return img, m


def _yoghurt() -> tuple[np.ndarray, np.ndarray]:
    s = 88
    img, m = _canvas(s, s)
    cv2.circle(m, (s // 2, s // 2), s // 2 - 1, 255, -1, cv2.LINE_AA)
    cv2.circle(img, (s // 2, s // 2), s // 2 - 1, (235, 235, 235), -1, cv2.LINE_AA)
    cv2.circle(img, (s // 2, s // 2), s // 2 - 7, (170, 110, 235), -1, cv2.LINE_AA)
    cv2.circle(img, (s // 2 - 10, s // 2 - 12), 9, (90, 40, 160), -1, cv2.LINE_AA)  # berry
    _text(img, "YO", (s // 2 - 17, s // 2 + 20), 0.8, (255, 255, 255))
    return img, m


def _banana() -> tuple[np.ndarray, np.ndarray]:
    w, h = 170, 80
    img, m = _canvas(w, h)
    cv2.ellipse(m, (w // 2, -50), (78, 120), 0, 30, 150, 255, 26, cv2.LINE_AA)
    img[:] = (40, 215, 240)
    yy = np.arange(h, dtype=np.float32)[:, None]
    img[:] = (img * (0.75 + 0.25 * np.cos((yy - 55) / 25))[..., None]).clip(0, 255).astype(np.uint8)
    for ang in (30, 150):  # brown tips
        x = int(w // 2 + 78 * math.cos(math.radians(ang)))
        y = int(-50 + 120 * math.sin(math.radians(ang)))
        cv2.circle(img, (x, y), 9, (20, 60, 90), -1)
    return img, m


def _apple() -> tuple[np.ndarray, np.ndarray]:
    s = 84
    img, m = _canvas(s, s)
    cv2.circle(m, (s // 2, s // 2 + 2), s // 2 - 3, 255, -1, cv2.LINE_AA)
    img[:] = (40, 40, 190)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    shade = 1.15 - np.hypot(xx - s * 0.35, yy - s * 0.35) / s
    img[:] = (img * shade[..., None]).clip(0, 255).astype(np.uint8)
    cv2.circle(img, (int(s * 0.33), int(s * 0.33)), 7, (200, 200, 255), -1, cv2.LINE_AA)  # gloss
    cv2.line(img, (s // 2, s // 2 - 2), (s // 2 + 4, s // 2 - 14), (20, 50, 80), 3)  # stem
    cv2.ellipse(img, (s // 2 + 12, s // 2 - 14), (9, 4), -30, 0, 360, (40, 160, 40), -1, cv2.LINE_AA)
    return img, m


def _chocolate() -> tuple[np.ndarray, np.ndarray]:
    w, h = 156, 60
    img, m = _canvas(w, h)
    img[:] = (110, 30, 80)
    cv2.rectangle(img, (0, 0), (16, h), (60, 190, 215), -1)  # gold crimped ends
    cv2.rectangle(img, (w - 16, 0), (w, h), (60, 190, 215), -1)
    for x in (2, 8, 14, w - 14, w - 8, w - 2):
        cv2.line(img, (x, 0), (x, h), (40, 140, 170), 1)
    cv2.line(img, (16, 12), (w - 16, 12), (60, 190, 215), 2)
    _text(img, "CHOCO", (32, 44), 0.9, (230, 230, 250))
    m[:] = 255
    return img, m


_DRAW: dict[str, tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = {
    "demo-cereal": ("Crunch cereal", _cereal),
    "demo-milk": ("Milk carton", _milk),
    "demo-soda": ("Cola can", _soda),
    "demo-water": ("Aqua water bottle", _bottle),
    "demo-yoghurt": ("Berry yoghurt", _yoghurt),
    "demo-banana": ("Banana", _banana),
    "demo-apple": ("Red apple", _apple),
    "demo-chocolate": ("Choco bar", _chocolate),
}
DEMO_PRODUCTS: tuple[str, ...] = tuple(_DRAW)
PRODUCT_NAMES: dict[str, str] = {k: v[0] for k, v in _DRAW.items()}


def product_sprite(product_id: str) -> Sprite:
    """The product as drawn from above: BGR and alpha (1 = product), about 60-170 px long side."""
    if product_id not in _DRAW:
        raise KeyError(f"unknown demo product '{product_id}' (valid: {', '.join(DEMO_PRODUCTS)})")
    img, m = _DRAW[product_id][1]()
    # A soft top-left light so flat drawings read as objects.
    h, w = m.shape
    ramp = np.linspace(1.06, 0.9, h, dtype=np.float32)[:, None] * np.linspace(1.03, 0.95, w, dtype=np.float32)
    img = (img.astype(np.float32) * ramp[..., None]).clip(0, 255).astype(np.uint8)
    return img, m.astype(np.float32) / 255.0


def warp_sprite(sprite: Sprite, angle_deg: float, scale: float) -> Sprite:
    """Rotate and scale a sprite about its centre into a tight patch."""
    img, alpha = sprite
    h, w = alpha.shape
    c, s = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    ow, oh = int(math.ceil((w * c + h * s) * scale)) + 2, int(math.ceil((w * s + h * c) * scale)) + 2
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    mat[0, 2] += ow / 2 - w / 2
    mat[1, 2] += oh / 2 - h / 2
    out = cv2.warpAffine(img, mat, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    a = cv2.warpAffine(alpha, mat, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return out, a


def render_packshot(product_id: str, size: int = 200, seed: int = 0) -> np.ndarray:
    """The product on white, centred, as a catalog photo; seeds 1, 2... give slightly different views."""
    rng = np.random.default_rng(seed)
    angle = 0.0 if seed == 0 else float(rng.uniform(-12, 12))
    img, alpha = warp_sprite(product_sprite(product_id), angle, 1.0)
    h, w = alpha.shape
    fit = size * (0.8 if seed == 0 else rng.uniform(0.7, 0.85)) / max(h, w)
    img = cv2.resize(img, (max(1, round(w * fit)), max(1, round(h * fit))), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    gain = 1.0 if seed == 0 else float(rng.uniform(0.9, 1.1))
    out = np.full((size, size, 3), 255, np.float32)
    y, x = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
    roi = out[y : y + img.shape[0], x : x + img.shape[1]]
    roi[:] = roi * (1 - alpha[..., None]) + img.astype(np.float32) * gain * alpha[..., None]
    return out.clip(0, 255).astype(np.uint8)
