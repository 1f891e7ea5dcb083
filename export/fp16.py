"""``python -m export fp16``: an fp16 copy of a checkout-stream ONNX model, checked against its fp32 source.

Weights and activations become float16 (``onnxruntime.transformers.float16``, the converter ONNX Runtime
ships); the input stays uint8 and every float output stays float32 (``keep_io_types``), so the runtime's
model contract and metadata are unchanged. Two metadata keys are added: ``precision`` ("fp16") and
``fp16_of`` (the sha256 of the fp32 file it came from).

The copy is accepted only within ``TOLERANCE`` of fp32 on the same inputs (rendered checkout frames for a
segmenter, crops of them for an embedder), both run on the CPU provider:

- embeddings: every row's cosine with its fp32 row >= ``min_cosine``;
- class map: the share of pixels with the same class >= ``min_class_agreement``;
- any other float output: the largest absolute difference <= ``max_abs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.transformers.float16 import convert_float_to_float16

from stream.stages.onnx_model import ModelError, resolve_model, sha256_file
from stream.synthetic.scene import CheckoutScene

TOLERANCE = {"min_cosine": 0.999, "min_class_agreement": 0.99, "max_abs": 0.02}


def convert(src: Path, dst: Path) -> Path:
    """Write the fp16 copy of ``src`` (an fp32 ONNX model) to ``dst``; returns ``dst``."""
    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    meta = {p.key: p.value for p in half.metadata_props}
    meta.update(precision="fp16", fp16_of=sha256_file(src))
    del half.metadata_props[:]
    for key, value in meta.items():
        half.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(half)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(dst))
    return dst


def check_batch(session: ort.InferenceSession, n: int = 4, seed: int = 5) -> dict[str, np.ndarray]:
    """``n`` realistic uint8 inputs for ``session``: rendered checkout frames at the model's size for a
    segmenter (input ``images``), square crops of such frames for an embedder (input ``crops``)."""
    inp = session.get_inputs()[0]
    h, w = int(inp.shape[1]), int(inp.shape[2])
    scene = CheckoutScene(seed=seed)
    frames = [scene.render(60 + 40 * i).image for i in range(n)]
    if inp.name == "crops":
        out = []
        for i, f in enumerate(frames):  # a centred square crop, shifted per frame, holds counter and items
            side = min(f.shape[:2])
            x0 = (f.shape[1] - side) * i // max(1, n - 1)
            out.append(cv2.resize(f[:side, x0 : x0 + side], (w, h), interpolation=cv2.INTER_AREA))
        return {inp.name: np.stack(out)}
    return {inp.name: np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])}


def compare(fp32: Path, fp16: Path, feeds: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Run both models on the CPU provider on ``feeds`` (default ``check_batch``) and report, per output,
    the figure ``TOLERANCE`` bounds, plus ``ok`` (every output within it)."""
    cpu = ["CPUExecutionProvider"]
    a = ort.InferenceSession(str(fp32), providers=cpu)
    b = ort.InferenceSession(str(fp16), providers=cpu)
    feeds = feeds if feeds is not None else check_batch(a)
    names = [o.name for o in a.get_outputs()]
    report: dict[str, Any] = {"inputs": {k: list(v.shape) for k, v in feeds.items()}, "tolerance": TOLERANCE}
    ok = True
    for name, x, y in zip(names, a.run(names, feeds), b.run(names, feeds), strict=True):
        if x.dtype != y.dtype or x.shape != y.shape:
            raise ModelError(f"{fp16.name}: output {name} is {y.dtype} {y.shape}, fp32 gives {x.dtype} {x.shape}")
        if name == "embeddings":
            cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
            report[name] = {"min_cosine": float(cos.min())}
            ok &= bool(cos.min() >= TOLERANCE["min_cosine"])
        elif x.dtype == np.uint8:
            agree = float((x == y).mean())
            report[name] = {"class_agreement": agree}
            ok &= agree >= TOLERANCE["min_class_agreement"]
        else:
            err = float(np.abs(x.astype(np.float64) - y).max())
            report[name] = {"max_abs": err}
            ok &= err <= TOLERANCE["max_abs"]
    report["ok"] = ok
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="builtin:segmenter", help="fp32 model: builtin:NAME or an .onnx path")
    p.add_argument("--out", type=Path, required=True, help="the fp16 .onnx file to write")
    p.add_argument("--check", type=int, default=4, help="inputs compared with fp32 (4)")


def run(args: argparse.Namespace) -> int:
    try:
        src = resolve_model(args.model)
        dst = convert(src, args.out)
        a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
        report = compare(src, dst, check_batch(a, args.check))
    except (ModelError, ValueError, onnx.checker.ValidationError) as exc:
        print(f"python -m export fp16: error: {exc}", file=sys.stderr)
        return 2
    report.update(fp32=str(src), fp16=str(dst), bytes={"fp32": src.stat().st_size, "fp16": dst.stat().st_size})
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        print(f"python -m export fp16: error: {dst} is outside the fp16 tolerance {TOLERANCE}", file=sys.stderr)
        return 1
    return 0
