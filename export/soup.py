"""``python -m export soup``: a segmenter whose weights are the average of a fine-tune and its start.

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): fine-tuning towards
one kind of data (here: realistic composites with hands in view, ``--hands``) and then interpolating
the weights, ``(1 - w) * start + w * fine-tuned``, keeps much of what the start model did well while
taking much of the fine-tune's gain. The average is taken over the two exported fp32 graphs, whose
batch norms are folded into their convolutions: the weights a user ships, in one parametrisation,
since a fine-tune from ``--init`` starts from exactly that file's folded weights with batch norm frozen.

    python -m export soup --init stream/models/segmenter.onnx --tuned RUN_DIR --weight 0.5 --out OUT [--ship]

RUN_DIR is the folder of a ``python -m export segmenter --init ...`` run (``segmenter.fp32.onnx`` and
``summary.json``). The result is measured on the same held-out sets as any trained segmenter and
written as OUT/segmenter.onnx, summary.json (the fine-tune's summary, its figures replaced, plus
``weight_average``) and segmenter.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from export.segmenter import TrainConfig, export_measured, write_card
from export.segnet import SegNet, load_onnx_weights
from stream.stages.onnx_model import sha256_file


def average(start: SegNet, tuned: SegNet, weight: float) -> SegNet:
    """``tuned`` with every float parameter and buffer set to ``(1 - weight) * start + weight * tuned``."""
    a, b = start.state_dict(), tuned.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the two segmenters differ in architecture")
    tuned.load_state_dict({k: torch.lerp(a[k], b[k], weight) if b[k].is_floating_point() else b[k] for k in b})
    return tuned


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", type=Path, required=True, help="the fp32 segmenter the fine-tune started from")
    p.add_argument(
        "--tuned", type=Path, required=True, help="folder of the fine-tune (segmenter.fp32.onnx, summary.json)"
    )
    p.add_argument("--weight", type=float, default=0.5, help="weight of the fine-tuned model, in [0, 1]")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--version", default="1")
    p.add_argument("--no-int8", action="store_true", help="skip static int8 quantisation")
    p.add_argument("--ship", action="store_true", help="copy the result into stream/models with its card")


def run(args: argparse.Namespace) -> int:
    prog = "python -m export soup"
    if not 0.0 <= args.weight <= 1.0:
        print(f"{prog}: error: --weight: expected a share in [0, 1], found {args.weight}", file=sys.stderr)
        return 2
    tuned_path, summary_path = args.tuned / "segmenter.fp32.onnx", args.tuned / "summary.json"
    for path in (args.init, tuned_path, summary_path):
        if not path.is_file():
            print(f"{prog}: error: not found: {path}", file=sys.stderr)
            return 2
    summary = json.loads(summary_path.read_text())
    if not summary["config"].get("freeze_bn"):
        print(
            f"{prog}: error: {args.tuned} was not fine-tuned from an --init model (batch norm not frozen)",
            file=sys.stderr,
        )
        return 2
    names = {f.name for f in fields(TrainConfig)}
    cfg_dict: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in summary["config"].items() if k in names
    }
    cfg = TrainConfig(**cfg_dict)
    start = load_onnx_weights(SegNet(pretrained=False), args.init)
    net = average(start, load_onnx_weights(SegNet(pretrained=False), tuned_path), args.weight)
    summary = {k: v for k, v in summary.items() if k not in ("torch", "onnx", "chosen", "torch_vs_ort_class_agreement")}
    summary["weight_average"] = {"start_sha256": sha256_file(args.init), "weight": args.weight}
    summary = export_measured(net, summary, cfg, args.out, version=args.version, quantize=not args.no_int8)
    write_card(args.out, summary, args.ship)
    print(json.dumps({k: summary[k] for k in ("chosen", "onnx", "torch_vs_ort_class_agreement")}, indent=2))
    return 0
