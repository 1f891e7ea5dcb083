"""Measure segmentation + box extraction on annotated images: `checkout-stream eval segment`.

Input: a folder of images and a folder of instance masks (PNG, 8 or 16 bit, same file stem, same
size as the image; 0 = background, 1..N = one id per item). The runtime's own Segmenter and
BoxExtractor run on each image; the predicted instance map (model resolution) is upsampled to the
image with nearest neighbour, exactly as ``SegMap.scale`` maps model pixels to source pixels.

Metrics (pooled over all images):
- foreground_iou: IoU of "any item" pixels.
- instance_precision / instance_recall: predicted and true instances matched one-to-one at IoU >= 0.5.
- count_error: mean |predicted count - true count| per image.
- touching_separated: of the true instance pairs that touch (8-neighbours), the share whose
  predicted instances (the one covering most of each true item) are two distinct instances.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.config import BoxesConfig, SegmentConfig
from stream.config import replace as config_replace
from stream.stages.boxes import BoxExtractor
from stream.stages.segment import Segmenter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MATCH_IOU = 0.5


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"expected folders of images and masks, found images={images} masks={masks}")
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    out: list[tuple[Path, Path]] = []
    missing: list[tuple[Path, Path]] = []
    for p in found:
        m = masks / f"{p.stem}.png"
        (out if m.exists() else missing).append((p, m))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images have no mask PNG with the same stem in {masks} "
            f"(first: {missing[0][0].name} -> expected {missing[0][1].name})"
        )
    return out


def _read(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image {image_path}")
    if mask is None or mask.ndim != 2:
        found = "unreadable" if mask is None else f"shape {mask.shape}"
        raise ValueError(f"mask {mask_path}: expected a single-channel 8/16-bit PNG of instance ids, found {found}")
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"mask {mask_path.name} is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]}: masks must match their images' size"
        )
    return image, mask.astype(np.int64)


def upsample_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Model-resolution labels -> (W, H) source size; source pixel centre (x + 0.5) * w / W."""
    h, w = labels.shape
    width, height = size
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _dense(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids present with 0 always first, labels renumbered 0..len(ids)-1) without sorting pixels."""
    flat = labels.ravel()
    present = np.bincount(flat) > 0
    present[0] = True
    ids = np.flatnonzero(present)
    lut = np.zeros(len(present), np.int64)
    lut[ids] = np.arange(len(ids))
    return ids, lut[flat]


def overlap_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection [T+1, P+1] pixel counts, true ids, predicted ids) with row/col 0 = background.
    Ids must be non-negative integers."""
    t_ids, t_dense = _dense(truth.astype(np.int64, copy=False))
    p_ids, p_dense = _dense(pred.astype(np.int64, copy=False))
    inter = np.bincount(t_dense * len(p_ids) + p_dense, minlength=len(t_ids) * len(p_ids))
    return inter.reshape(len(t_ids), len(p_ids)), t_ids, p_ids


def match_instances(inter: np.ndarray, iou_min: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of true rows to predicted columns (background excluded) by IoU."""
    t_area, p_area = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(t_area[:, None] + p_area[None, :] - inter, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    matches, used_t, used_p = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        t, p = divmod(int(flat), iou.shape[1])
        if iou[t, p] < iou_min:
            break
        if t not in used_t and p not in used_p:
            matches.append((t, p))
            used_t.add(t)
            used_p.add(p)
    return matches


def touching_pairs(mask: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a < b) of instance ids that are 8-neighbours somewhere."""
    pairs: set[tuple[int, int]] = set()
    h, w = mask.shape
    padded = np.pad(mask, 1)
    a = padded[1 : h + 1, 1 : w + 1]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        b = padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
        sel = (a != b) & (a > 0) & (b > 0)
        for x, y in zip(a[sel].tolist(), b[sel].tolist(), strict=True):
            pairs.add((min(x, y), max(x, y)))
    return pairs


def _score(truth: np.ndarray, pred: np.ndarray, acc: dict[str, float]) -> None:
    inter, t_ids, p_ids = overlap_matrix(truth, pred)
    acc["fg_inter"] += float(np.logical_and(truth > 0, pred > 0).sum())
    acc["fg_union"] += float(np.logical_or(truth > 0, pred > 0).sum())
    n_t, n_p = len(t_ids) - 1, len(p_ids) - 1
    acc["true"] += n_t
    acc["pred"] += n_p
    acc["matched"] += len(match_instances(inter))
    acc["count_abs"] += abs(n_p - n_t)
    # The predicted instance covering most of each true item (0 = none).
    cover = {
        int(t_ids[r]): int(p_ids[np.argmax(inter[r, 1:]) + 1]) if n_p and inter[r, 1:].max() > 0 else 0
        for r in range(1, len(t_ids))
    }
    for a, b in touching_pairs(truth):
        acc["touching"] += 1
        acc["separated"] += float(cover[a] != 0 and cover[b] != 0 and cover[a] != cover[b])


def eval_segment(
    images: Path,
    masks: Path,
    segment_cfg: SegmentConfig,
    boxes_cfg: BoxesConfig,
    *,
    split_touching: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the runtime's segmenter + boxes on every image; metrics as in the module docstring."""
    pairs = _pairs(Path(images), Path(masks))
    if split_touching is not None:
        boxes_cfg = config_replace(boxes_cfg, split_touching=split_touching)
    segmenter, boxes = Segmenter(segment_cfg), BoxExtractor(boxes_cfg)
    acc = dict.fromkeys(("fg_inter", "fg_union", "true", "pred", "matched", "count_abs", "touching", "separated"), 0.0)
    for image_path, mask_path in tqdm(pairs, disable=not progress, unit="img", desc="eval segment"):
        image, truth = _read(image_path, mask_path)
        det = boxes.extract(segmenter.segment(image))
        _score(truth, upsample_nearest(det.instance_map, (image.shape[1], image.shape[0])), acc)
    return {
        "n_images": len(pairs),
        "foreground_iou": acc["fg_inter"] / acc["fg_union"] if acc["fg_union"] else 1.0,
        "instance_precision": acc["matched"] / acc["pred"] if acc["pred"] else 1.0,
        "instance_recall": acc["matched"] / acc["true"] if acc["true"] else 1.0,
        "count_error": acc["count_abs"] / len(pairs),
        "touching_separated": acc["separated"] / acc["touching"] if acc["touching"] else None,
        "n_true_instances": int(acc["true"]),
        "n_pred_instances": int(acc["pred"]),
        "n_touching_pairs": int(acc["touching"]),
        "split_touching": boxes_cfg.split_touching,
        "model": segmenter.identity,
    }


def format_table(result: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    model = result.get("model", {})
    rows = [
        ("images", result["n_images"]),
        ("foreground IoU", result["foreground_iou"]),
        ("instance precision @0.5", result["instance_precision"]),
        ("instance recall @0.5", result["instance_recall"]),
        ("count error / image", result["count_error"]),
        (f"touching pairs separated ({result['n_touching_pairs']})", result["touching_separated"]),
        ("instances true / predicted", f"{result['n_true_instances']} / {result['n_pred_instances']}"),
        ("split touching", result["split_touching"]),
        ("model", f"{model.get('name', '?')} v{model.get('version', '?')}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {fmt(v)}" for k, v in rows)
