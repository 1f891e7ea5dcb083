"""Count items on real images with the runtime's own stages: `checkout-stream eval count`.

Two kinds of ground truth, either or both:

- a known count per image (``--count N``): every image shows exactly N items (a folder of one-product
  photos is ``--count 1``). Images are found recursively, so ``DIR/<product>/*.jpg`` works.
- a mask of pixels that must never be items (``--masks DIR``: PNGs with the images' stems, non-zero =
  e.g. a hand). Reported: the share of mask pixels the segmenter calls anything but background
  (item or boundary), as the mean over images and pooled over pixels, and the share of images where
  a detected item lies on the mask (at least ``on_mask_frac`` of the item's pixels are mask pixels).

The frame goes through Segmenter -> (optional station gate) -> BoxExtractor -> (optional zones), the
path of ``checkout-stream run``, and the items counted are the detections confident enough to start a
track (``track.can_start_track``: what the runtime would report); the class map is upsampled to the
image with nearest neighbour.
``select`` keeps the images whose numeric stem lies in one of the given inclusive ranges, so a split
of a numbered set can be named on the command line ("11-20,76-100").
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.eval.segment import IMAGE_SUFFIXES, upsample_nearest
from stream.stages.boxes import BoxExtractor
from stream.stages.segment import Segmenter
from stream.stages.station import Station
from stream.stages.track import can_start_track
from stream.stages.zones import Zone, ZoneFilter
from stream.types import Detections, SegMap

log = logging.getLogger(__name__)

ON_MASK_FRAC = 0.5

SegmentFn = Callable[[np.ndarray], SegMap]
ExtractFn = Callable[[np.ndarray, SegMap], Detections]


def parse_select(text: str | None) -> list[tuple[int, int]]:
    """'11-20,76-100,5' -> [(11, 20), (76, 100), (5, 5)]; None or '' -> [] (everything)."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(
                f"--select: expected ranges of numeric file stems like '11-20,76-100', found {part.strip()!r}"
            ) from None
        if b < a:
            raise ValueError(f"--select: range {part.strip()!r} is empty (end before start)")
        out.append((a, b))
    return out


def _selected(stem: str, ranges: Sequence[tuple[int, int]]) -> bool:
    if not ranges:
        return True
    return stem.isdigit() and any(a <= int(stem) <= b for a, b in ranges)


def find_images(folder: Path, select: Sequence[tuple[int, int]] = ()) -> list[Path]:
    """Images under ``folder`` (recursively, sorted), filtered by numeric stem ranges."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"expected a folder of images, found {folder} ({'missing' if not folder.exists() else 'not a folder'})"
        )
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and _selected(p.stem, select))
    if not found:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}" + (" matching --select" if select else "")
        )
    return found


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask PNG as bool [H, W]; it must have the image's size."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"no readable mask {path} (expected a PNG with the image's stem)")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise ValueError(
            f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}: masks must match their images' size"
        )
    return np.asarray(mask > 0)


class _Acc:
    def __init__(self) -> None:
        self.counts: list[int] = []
        self.per_group: dict[str, list[int]] = {}
        self.mask_share: list[float] = []
        self.mask_hit = 0
        self.mask_px = 0
        self.images_on_mask = 0


def score_image(
    det: Detections, segmap: SegMap, mask: np.ndarray | None, acc: _Acc, *, group: str, on_mask_frac: float
) -> None:
    """Add one image's count (and mask figures) to ``acc``."""
    n = len(det)
    acc.counts.append(n)
    acc.per_group.setdefault(group, []).append(n)
    if mask is None:
        return
    size = (mask.shape[1], mask.shape[0])
    called = upsample_nearest(segmap.classes, size) != 0
    inst = upsample_nearest(det.instance_map, size)
    hit, px = int((called & mask).sum()), int(mask.sum())
    acc.mask_hit += hit
    acc.mask_px += px
    if px:
        acc.mask_share.append(hit / px)
    if n:
        area = np.bincount(inst.ravel(), minlength=n + 1)[1:]
        on = np.bincount(inst[mask].ravel(), minlength=n + 1)[1:]
        if np.any(on >= on_mask_frac * np.maximum(area, 1)):
            acc.images_on_mask += 1


def eval_count(
    images: Sequence[Path],
    segment: SegmentFn,
    extract: ExtractFn,
    *,
    count: int | None = None,
    masks: Sequence[Path | None] = (),
    select: Sequence[tuple[int, int]] = (),
    on_mask_frac: float = ON_MASK_FRAC,
    progress: bool = True,
) -> dict[str, Any]:
    """Count items on every image of the folders ``images`` (``masks[i]`` pairs with ``images[i]``).

    ``segment`` maps a BGR image to its SegMap; ``extract`` maps (image, SegMap) to the Detections
    that would be reported (station gate, boxes and zones applied)."""
    if count is None and not any(m is not None for m in masks):
        raise ValueError("eval count: give a known count (--count N) or masks (--masks DIR), or both")
    if count is not None and count < 0:
        raise ValueError(f"--count: expected a count >= 0, found {count}")
    if not 0.0 < on_mask_frac <= 1.0:
        raise ValueError(f"on_mask_frac: expected a share in (0, 1], found {on_mask_frac}")
    mask_dirs = list(masks) + [None] * (len(images) - len(masks))
    if len(mask_dirs) != len(images):
        raise ValueError(
            f"eval count: {len(masks)} mask folders for {len(images)} image folders; "
            "give one --masks per --images, in the same order"
        )
    jobs = [
        (root, p, mdir) for root, mdir in zip(images, mask_dirs, strict=True) for p in find_images(Path(root), select)
    ]
    acc = _Acc()
    for root, path, mdir in tqdm(jobs, disable=not progress, unit="img", desc="eval count"):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode image {path}")
        mask = None if mdir is None else read_mask(Path(mdir) / f"{path.stem}.png", image.shape[:2])
        segmap = segment(image)
        det = extract(image, segmap)
        group = path.parent.relative_to(root).as_posix() if path.parent != Path(root) else Path(root).name
        score_image(det, segmap, mask, acc, group=group, on_mask_frac=on_mask_frac)
    return summarise(acc, count, has_masks=any(m is not None for m in mask_dirs), on_mask_frac=on_mask_frac)


def summarise(acc: _Acc, count: int | None, *, has_masks: bool, on_mask_frac: float) -> dict[str, Any]:
    counts = np.asarray(acc.counts)
    out: dict[str, Any] = {
        "n_images": len(counts),
        "mean_count": float(counts.mean()) if len(counts) else 0.0,
        "max_count": int(counts.max()) if len(counts) else 0,
        "count_histogram": {str(k): v for k, v in sorted(Counter(acc.counts).items())},
    }
    if count is not None:
        out["true_count"] = count
        out["exact_rate"] = float((counts == count).mean()) if len(counts) else 1.0
        out["count_error"] = float(np.abs(counts - count).mean()) if len(counts) else 0.0
        out["per_group_exact"] = {g: float(np.mean(np.asarray(c) == count)) for g, c in sorted(acc.per_group.items())}
    if has_masks:
        n_masked = len(acc.mask_share)
        out["mask_pixels_called_item"] = float(np.mean(acc.mask_share)) if n_masked else 0.0
        out["mask_pixels_called_item_pooled"] = acc.mask_hit / acc.mask_px if acc.mask_px else 0.0
        out["images_with_item_on_mask"] = acc.images_on_mask / len(counts) if len(counts) else 0.0
        out["on_mask_frac"] = on_mask_frac
    return out


def format_table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("images", str(result["n_images"])),
        ("items per image, mean / max", f"{result['mean_count']:.2f} / {result['max_count']}"),
    ]
    if "exact_rate" in result:
        rows += [
            (f"exactly {result['true_count']} item(s)", f"{result['exact_rate'] * 100:.1f}%"),
            ("count error / image", f"{result['count_error']:.2f}"),
        ]
        rows += [(f"  {g}", f"{v * 100:.1f}%") for g, v in result["per_group_exact"].items()]
    if "mask_pixels_called_item" in result:
        rows += [
            (
                "mask pixels called item (mean / pooled)",
                f"{result['mask_pixels_called_item'] * 100:.1f}% / "
                f"{result['mask_pixels_called_item_pooled'] * 100:.1f}%",
            ),
            (
                f"images with an item on the mask (>= {result['on_mask_frac']:.0%} of it)",
                f"{result['images_with_item_on_mask'] * 100:.1f}%",
            ),
        ]
    hist = ", ".join(f"{k}: {v}" for k, v in result["count_histogram"].items())
    rows.append(("count histogram", hist))
    if "model" in result:
        m = result["model"]
        rows.append(("model", f"{m.get('name', '?')} v{m.get('version', '?')} ({m.get('sha256', '')[:12]})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def product_stages(
    segment_cfg: Any,
    boxes_cfg: Any,
    track_cfg: Any,
    station: Station | None = None,
    zones: Sequence[Zone] = (),
) -> tuple[SegmentFn, ExtractFn, dict[str, str]]:
    """The runtime's Segmenter (through ``station``'s gate when given) and BoxExtractor (then the
    zones, then the tracker's birth rule) as the two callables ``eval_count`` takes, and the
    segmenter's identity."""
    segmenter, boxes, zone_filter = Segmenter(segment_cfg), BoxExtractor(boxes_cfg), ZoneFilter(zones)

    def segment(image: np.ndarray) -> SegMap:
        segmap = segmenter.segment(image)
        return station.apply(image, segmap) if station is not None else segmap

    def extract(_image: np.ndarray, segmap: SegMap) -> Detections:
        det = zone_filter.apply(boxes.extract(segmap))[0]
        keep = can_start_track(det.confidence, track_cfg)
        return det if bool(keep.all()) else det.select(keep)

    return segment, extract, segmenter.identity
