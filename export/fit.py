"""Fit the shipped segmenter to one counter: `python -m export fit`.

A few frames of the empty counter (a video or images) become the backgrounds of training composites;
the retailer's catalog photos become the items (cut out where they are on white, else pasted as
rectangles). The shipped segmenter is fine-tuned from its own ONNX weights for a time budget (batch
norm frozen, so it starts exactly where the shipped model is), exported with the same contract and
checked on held-out composites (held-out catalog photos on this counter) and, when given, on
annotated frames (image + instance-mask PNG pairs, as for `checkout-stream eval segment`).
The result is used with `segment.model.path: /path/to/model.onnx`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from export.composites import default_iconic_dir, image_files
from export.segmenter import TrainConfig, build_segmenter
from stream.config import load_config
from stream.eval.segment import eval_segment
from stream.stages.onnx_model import resolve_model

log = logging.getLogger(__name__)

REALISM = 0.5  # share of fitting composites with real hands, hard shadows and text
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")


def background_frames(source: Path, n: int = 8) -> list[np.ndarray]:
    """Up to ``n`` frames spread over a video, or the images of a folder, or one image."""
    if source.is_dir():
        frames = [img for p in image_files(source)[:64] if (img := cv2.imread(str(p), cv2.IMREAD_COLOR)) is not None]
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(source))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        frames = []
        for i in np.linspace(0, max(total - 1, 0), n).astype(int).tolist():
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = cap.read()
            if ok:
                frames.append(frame)
        cap.release()
    else:
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        frames = [] if img is None else [img]
    if not frames:
        raise FileNotFoundError(
            f"no frames of the empty counter in {source} (expected a video, an image or a folder of images)"
        )
    return frames


def fit(
    background: Path | Sequence[np.ndarray],
    catalog: Path,
    out: Path,
    *,
    minutes: float = 10.0,
    annotated: Path | None = None,
    init: str = "builtin:segmenter",
    progress: bool = True,
    realism: float = REALISM,
    data_root: Path | None = None,
    quantize: bool = True,
) -> dict:
    """Fine-tune ``init`` on composites of ``catalog`` photos over ``background`` (a video, image or
    folder, or the frames themselves); write ``out``. With ``realism`` > 0 and the shared data at
    ``data_root``, that share of composites also carries real hand cutouts (hands TRAIN split),
    hard shadows and text over this station's frames (export/realism.py)."""
    if not image_files(catalog):
        raise FileNotFoundError(f"no catalog photos (*.jpg, *.png) under {catalog}")
    init_path = resolve_model(init)
    work = Path(tempfile.mkdtemp(prefix="segfit-"))
    try:
        bg_paths = []
        frames = background_frames(background) if isinstance(background, Path) else list(background)
        for i, frame in enumerate(frames):
            p = work / f"bg{i:02d}.png"
            cv2.imwrite(str(p), frame)
            bg_paths.append(str(p))
        root = data_root if data_root is not None else default_iconic_dir().parents[1]
        cfg = TrainConfig(
            minutes=minutes,
            lr=5e-4,
            iconic_dir=str(catalog),
            background_images=tuple(bg_paths),
            freeze_bn=True,
            val_images=32,
            realism=realism if root.is_dir() else 0.0,
            data_root=str(root),
        )
        summary = build_segmenter(
            work / "build", cfg, init=init_path, version="fit", progress=progress, quantize=quantize
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "build" / "segmenter.onnx", out)
        (out.with_suffix(".json")).write_text(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if annotated is not None:
        cfg_rt = load_config(overrides={"segment.model.path": str(out), "segment.model.provider": "cpu"})
        images = annotated / "images" if (annotated / "images").is_dir() else annotated
        masks = annotated / "masks" if (annotated / "masks").is_dir() else annotated
        summary["annotated"] = eval_segment(images, masks, cfg_rt.segment, cfg_rt.boxes, progress=progress)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--background",
        type=Path,
        required=True,
        metavar="VIDEO_OR_IMAGES",
        help="the empty counter: a video, an image or a folder of images",
    )
    p.add_argument(
        "--catalog-photos",
        type=Path,
        default=default_iconic_dir(),
        metavar="DIR",
        help="product photos (folders allowed); cut out where on white",
    )
    p.add_argument("--out", type=Path, required=True, help="the fitted model (.onnx)")
    p.add_argument("--minutes", type=float, default=10.0, help="fine-tuning wall-clock budget")
    p.add_argument(
        "--annotated",
        type=Path,
        default=None,
        metavar="DIR",
        help="annotated frames: DIR/images + DIR/masks (instance PNGs with the same stems)",
    )
    p.add_argument("--init", default="builtin:segmenter", help="model to start from (builtin:NAME or .onnx)")
    p.add_argument(
        "--realism",
        type=float,
        default=REALISM,
        help="share of composites with real hand cutouts, hard shadows and text over these frames",
    )
    p.add_argument("--no-int8", action="store_true", help="skip the static int8 copy (faster)")


def run(args: argparse.Namespace) -> int:
    summary = fit(
        args.background,
        args.catalog_photos,
        args.out,
        minutes=args.minutes,
        annotated=args.annotated,
        init=args.init,
        realism=args.realism,
        quantize=not args.no_int8,
    )
    report = {
        "out": str(args.out),
        "steps": summary["steps"],
        "chosen": summary["chosen"],
        "validation": dict(summary["onnx"][summary["chosen"]]),
    }
    if "annotated" in summary:
        report["annotated"] = summary["annotated"]
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export fit", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
