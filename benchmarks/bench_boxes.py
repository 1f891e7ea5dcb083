"""Boxes: the Numba run-based kernel against cv2.connectedComponentsWithStats on the same masks.

Masks are realistic and deterministic (seeded): 5-15 item-shaped blobs (rotated rectangles and
ellipses drawn with OpenCV, some touching), noise specks, plus an all-zero mask, at 640x480 and
1920x1080. Both sides label the same binary mask with 8-connectivity and return boxes, areas and
centroids; the run checks that the two sets of (box, area) are identical before timing. OpenCV runs
with its default thread count and with one thread. The full stage (BoxExtractor.extract on a class
map with a boundary class and confidence) is timed too, at the default config and with
``boxes.weak_boundary`` off (what its contact pass costs).

    python3 benchmarks/bench_boxes.py [--reps 50]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, uninstalled
from stream.config import load_config, replace
from stream.stages.boxes import BoxExtractor, Scratch, components_with_stats
from stream.types import SegMap

RESULTS = Path(__file__).resolve().parent / "results" / "boxes.json"


def scene(w: int, h: int, seed: int) -> np.ndarray:
    """uint8 class map: 0 background, 1 item, 2 a 2-px boundary rim around each item."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((h, w), np.uint8)
    n_items = int(rng.integers(5, 16))
    centres: list[tuple[float, float, float]] = []
    for k in range(n_items):
        size = float(rng.uniform(0.08, 0.22) * min(w, h))
        if centres and k % 3 == 2:  # every third item touches the previous one
            px, py, ps = centres[-1]
            ang = rng.uniform(0, 2 * np.pi)
            cx, cy = px + np.cos(ang) * (ps + size) * 0.45, py + np.sin(ang) * (ps + size) * 0.45
        else:
            cx, cy = rng.uniform(size, w - size), rng.uniform(size, h - size)
        centres.append((cx, cy, size))
        item = np.zeros((h, w), np.uint8)
        angle = float(rng.uniform(0, 180))
        axes = (size * rng.uniform(0.5, 1.0), size * rng.uniform(0.3, 0.7))
        if rng.random() < 0.5:
            pts = cv2.boxPoints(((cx, cy), (2 * axes[0], 2 * axes[1]), angle)).astype(np.int32)
            cv2.fillPoly(item, [pts], 1)
        else:
            cv2.ellipse(item, ((cx, cy), (2 * axes[0], 2 * axes[1]), angle), 1, -1)
        contours, _ = cv2.findContours(item, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        classes[item > 0] = 1
        cv2.drawContours(classes, contours, -1, 2, 2)  # later items draw over earlier ones
    for _ in range(int(rng.integers(20, 60))):  # specks
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(0, 3))
        classes[y : y + r + 1, x : x + r + 1] = 1
    return classes


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def box_set(xywh_area: np.ndarray) -> list[tuple[int, ...]]:
    return sorted(tuple(int(v) for v in row) for row in xywh_area)


def run_case(name: str, classes: np.ndarray, reps: int, default_threads: int) -> dict:
    mask = (classes > 0).astype(np.uint8)
    scratch = Scratch()
    ours = components_with_stats(mask, 8, scratch=scratch)
    cv_n, _, cv_stats, cv_cent = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    x1y1, x2y2 = ours.xyxy[:, :2], ours.xyxy[:, 2:]
    ours_xywha = np.column_stack([x1y1, x2y2 - x1y1, ours.area])
    identical = box_set(ours_xywha) == box_set(cv_stats[1:])
    cent_err = 0.0
    if len(ours):
        order_ours = np.lexsort(ours_xywha.T[::-1])
        order_cv = np.lexsort(cv_stats[1:].T[::-1])
        cent_err = float(np.abs(ours.centroid[order_ours] - cv_cent[1:][order_cv]).max())
    if not identical:
        raise SystemExit(f"{name}: boxes/areas differ from OpenCV ({len(ours)} vs {cv_n - 1} components)")

    h, w = classes.shape
    sm = SegMap(
        classes=classes,
        confidence=np.full((h, w), 0.9, np.float32),
        class_names=("background", "item", "boundary"),
        source_size=(w, h),
    )
    boxes_cfg = load_config().boxes
    stage = BoxExtractor(boxes_cfg)
    no_weak = BoxExtractor(replace(boxes_cfg, weak_boundary=0.0))
    res = {
        "case": name,
        "size": f"{w}x{h}",
        "components": len(ours),
        "identical": identical,
        "max_centroid_diff_px": cent_err,
        "items_after_split": len(stage.extract(sm)),
        "numba_ms": median_ms(lambda: components_with_stats(mask, 8, scratch=scratch), reps),
        "numba_fresh_scratch_ms": median_ms(lambda: components_with_stats(mask, 8), reps),
        "stage_extract_ms": median_ms(lambda: stage.extract(sm), reps),
        "stage_no_weak_boundary_ms": median_ms(lambda: no_weak.extract(sm), reps),
    }
    cv2.setNumThreads(default_threads)
    res["opencv_default_threads_ms"] = median_ms(
        lambda: cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S), reps
    )
    cv2.setNumThreads(1)
    res["opencv_1_thread_ms"] = median_ms(
        lambda: cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S), reps
    )
    cv2.setNumThreads(default_threads)
    res["speedup_vs_default"] = res["opencv_default_threads_ms"] / res["numba_ms"]
    res["speedup_vs_1_thread"] = res["opencv_1_thread_ms"] / res["numba_ms"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    default_threads = cv2.getNumThreads()
    versions = {
        "opencv": cv2.__version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": __import__("os").cpu_count(),
        "opencv_default_threads": default_threads,
    }
    print("  ".join(f"{k}={v}" for k, v in versions.items()))
    cases = [
        ("realistic", scene(640, 480, 1)),
        ("realistic", scene(640, 480, 2)),
        ("all-zero", np.zeros((480, 640), np.uint8)),
        ("realistic", scene(1920, 1080, 1)),
        ("realistic", scene(1920, 1080, 2)),
        ("all-zero", np.zeros((1080, 1920), np.uint8)),
    ]
    rows = [run_case(name, classes, args.reps, default_threads) for name, classes in cases]
    head = (
        f"{'case':10} {'size':>9} {'comps':>5} {'same':>4} {'numba':>7} {'fresh':>7} {'stage':>7} {'no weak':>7} "
        f"{'cv2 dflt':>8} {'cv2 1t':>7} {'x dflt':>6} {'x 1t':>6}"
    )
    print(
        f"median ms over {args.reps} reps (fresh = new scratch per call; stage = BoxExtractor.extract "
        "with boundary split + confidence; no weak = the same with boxes.weak_boundary 0)"
    )
    print(head)
    for r in rows:
        print(
            f"{r['case']:10} {r['size']:>9} {r['components']:>5} {'yes' if r['identical'] else 'NO':>4} "
            f"{r['numba_ms']:7.3f} {r['numba_fresh_scratch_ms']:7.3f} {r['stage_extract_ms']:7.3f} "
            f"{r['stage_no_weak_boundary_ms']:7.3f} "
            f"{r['opencv_default_threads_ms']:8.3f} {r['opencv_1_thread_ms']:7.3f} "
            f"{r['speedup_vs_default']:6.1f} {r['speedup_vs_1_thread']:6.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"versions": versions, "reps": args.reps, "connectivity": 8, "cases": rows}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
