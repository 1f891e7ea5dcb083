"""Shared ONNX export helpers (embedder and segmenter).

- ``InGraphPreprocess`` puts the pixel conversion inside the graph: uint8 NHWC BGR in, float NCHW RGB
  normalised as (x - mean) / std into the wrapped network, so serving cannot drift from training.
- ``export_onnx`` exports with the legacy TorchScript exporter (``dynamo=False``: no onnxscript
  dependency), dynamic batch axis, writes ``metadata_props`` and runs ``onnx.checker``.
- ``compare_with_torch`` runs both on the same uint8 inputs and reports max |diff| and min cosine.
- ``quantize_int8`` makes a static int8 QDQ copy calibrated on real inputs.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

log = logging.getLogger(__name__)

OPSET = 17


class InGraphPreprocess(nn.Module):
    """uint8 [N,H,W,3] BGR -> float [N,3,H,W] RGB, (x - mean) / std -> ``net``.

    ``net`` may return a tensor or a tuple of tensors (e.g. class map and confidence)."""

    def __init__(self, net: nn.Module, mean: float = 127.0, std: float = 128.0) -> None:
        super().__init__()
        self.net = net
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> Any:
        x = x.permute(0, 3, 1, 2).float()
        x = torch.flip(x, dims=[1])  # BGR -> RGB
        return self.net((x - self.mean) / self.std)


def normalisation_meta(mean: float = 127.0, std: float = 128.0) -> dict[str, Any]:
    """The ``normalisation`` metadata value matching ``InGraphPreprocess``."""
    return {"input": "uint8 NHWC BGR", "in_graph": True, "channels": "RGB", "mean": mean, "std": std}


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Strings are stored as-is, anything else as JSON (the runtime reads those with json.loads)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=text))


def export_onnx(
    model: nn.Module,
    example: np.ndarray,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    metadata: Mapping[str, Any],
    dynamic_batch: bool = True,
    opset: int = OPSET,
) -> Path:
    """Export ``model`` (already wrapped, taking uint8 NHWC) to ``path``; check and tag it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    axes = {n: {0: "N"} for n in [input_name, *output_names]} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings about shapes turned into constants are expected: the spatial size is fixed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(example),),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.where(den > 0, (a2 * b2).sum(1) / np.maximum(den, 1e-30), 1.0)


def compare_with_torch(model: nn.Module, path: Path, inputs: np.ndarray) -> dict[str, dict[str, float]]:
    """Run torch and ORT on the same uint8 batch: {output: {max_abs, min_cosine}} (per sample)."""
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {sess.get_inputs()[0].name: inputs})
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(inputs))
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    report = {}
    for name, r, g in zip(names, refs, got, strict=True):
        r_np = r.numpy()
        diff = np.abs(r_np.astype(np.float64) - g.astype(np.float64))
        report[name] = {"max_abs": float(diff.max()), "min_cosine": float(_cosines(r_np, g).min())}
    return report


class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: Iterable[np.ndarray],
    *,
    op_types: Sequence[str] = ("Conv", "MatMul", "Gemm"),
    per_channel: bool = True,
    method: str = "minmax",
) -> Path:
    """Static int8 QDQ copy of ``fp32_path`` calibrated on ``calibration`` (uint8 input batches).
    Metadata is carried over (quantisation drops it otherwise) plus ``quantization``."""
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(methods)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    quantize_static(
        str(pre),
        str(out_path),
        _Reader(input_name, calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        op_types_to_quantize=list(op_types),
        calibrate_method=methods[method],
    )
    pre.unlink(missing_ok=True)
    meta = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
    proto = onnx.load(str(out_path))
    set_metadata(proto, {**meta, "quantization": f"static int8 QDQ ({method}, per_channel={per_channel})"})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return out_path


def compare_onnx(a: Path, b: Path, inputs: np.ndarray) -> dict[str, float]:
    """First outputs of two ONNX models on the same batch: min per-sample cosine and max |diff|."""
    sa, sb = ort_session(a), ort_session(b)
    oa = sa.run(None, {sa.get_inputs()[0].name: inputs})[0]
    ob = sb.run(None, {sb.get_inputs()[0].name: inputs})[0]
    return {"min_cosine": float(_cosines(oa, ob).min()), "max_abs": float(np.abs(oa - ob).max())}
