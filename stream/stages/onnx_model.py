"""Loading an ONNX model into ONNX Runtime: model resolution, checksum, providers, metadata.

Shared by the segment and embed stages. Providers come from an explicit table; ``auto`` tries
TensorRT (with engine and timing caches on disk), then CUDA, then CPU, and a fallback is a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import onnxruntime as ort

from stream.config import ModelConfig

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
MANIFEST = "MODELS.json"  # {name: {"file": ..., "sha256": ...}} beside the shipped models

PROVIDER_CHAINS = {
    "auto": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CPUExecutionProvider"),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
}


class ModelError(RuntimeError):
    """A model is missing, corrupt, fails its checksum or breaks its contract."""


def models_dir() -> Path:
    return Path(str(resources.files("stream") / "models"))


def _manifest() -> dict[str, dict[str, str]]:
    path = models_dir() / MANIFEST
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(spec: str, verify: bool = True) -> Path:
    """``builtin:NAME`` -> the shipped file (checked against MODELS.json), else a path on disk."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        entry = _manifest().get(name)
        if entry is None:
            known = ", ".join(sorted(_manifest())) or "none"
            raise ModelError(f"no built-in model '{name}' (shipped: {known})")
        path = models_dir() / entry["file"]
        if not path.exists():
            raise ModelError(f"built-in model file {path} is missing: reinstall checkout-stream")
        if verify and sha256_file(path) != entry["sha256"]:
            raise ModelError(
                f"built-in model {path.name} fails its checksum (expected sha256 {entry['sha256'][:12]}…):"
                " the file is corrupt or was replaced; reinstall checkout-stream"
            )
        return path
    path = Path(os.path.expanduser(spec))
    if not path.is_file():
        raise ModelError(f"model file {spec} not found (expected an .onnx file or builtin:NAME)")
    return path


def _provider_options(name: str, cfg: ModelConfig) -> dict[str, Any]:
    if name == "TensorrtExecutionProvider":
        cache = os.path.expanduser(cfg.trt_cache_dir)
        os.makedirs(cache, exist_ok=True)
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            "trt_fp16_enable": cfg.fp16,
        }
    return {}


@dataclass(frozen=True)
class LoadedModel:
    """An ONNX Runtime session with its metadata and identity."""

    session: ort.InferenceSession
    path: Path
    sha256: str
    metadata: dict[str, str]
    provider: str

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.stem)

    @property
    def version(self) -> str:
        return self.metadata.get("version", "0")

    def meta_json(self, key: str) -> Any:
        """A metadata value stored as JSON (sizes, class names...); a clear error if absent."""
        if key not in self.metadata:
            raise ModelError(f"model {self.path.name} lacks metadata '{key}': not a checkout-stream model?")
        return json.loads(self.metadata[key])


def load_model(cfg: ModelConfig) -> LoadedModel:
    path = resolve_model(cfg.path, cfg.verify_checksum)
    available = set(ort.get_available_providers())
    chain = [p for p in PROVIDER_CHAINS[cfg.provider] if p in available]
    wanted = PROVIDER_CHAINS[cfg.provider][0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.intra_op_threads
    opts.inter_op_num_threads = cfg.inter_op_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=[(p, _provider_options(p, cfg)) for p in chain]
        )
    except Exception as exc:  # ORT raises several private exception types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {path}: {first}") from None
    active = session.get_providers()[0]
    if active != wanted and cfg.provider != "auto":
        log.warning("model %s: %s unavailable, running on %s", path.name, wanted, active)
    elif cfg.provider == "auto" and active == "CPUExecutionProvider" and len(available) > 2:
        log.warning("model %s: GPU providers present but not usable, running on CPU", path.name)
    log.info("model %s on %s", path.name, active)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return LoadedModel(session=session, path=path, sha256=sha256_file(path), metadata=meta, provider=active)


def check_io(model: LoadedModel, *, kind: str, input_name: str, input_shape: str,
             outputs: tuple[tuple[str, str], ...], metadata: tuple[str, ...], config_key: str) -> None:
    """The part of a model contract every checkout-stream model shares: one uint8 image input named
    ``input_name``, the declared ``(name, type)`` outputs, and the required metadata keys."""
    where = f"model {model.path.name}"
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    inputs = model.session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != input_name or inputs[0].type != "tensor(uint8)":
        found = [(i.name, i.type) for i in inputs]
        raise ModelError(
            f"{where} is not {a_kind}: expected one input '{input_name}' uint8 {input_shape},"
            f" found {found}; point {config_key} at {a_kind} ONNX (e.g. builtin:{kind})"
        )
    found_out = {o.name: o.type for o in model.session.get_outputs()}
    for name, typ in outputs:
        if found_out.get(name) != typ:
            want = ", ".join(f"{n} {t}" for n, t in outputs)
            raise ModelError(f"{where} is not {a_kind}: expected outputs {want}, "
                             f"found {sorted(found_out.items())}")
    missing = [k for k in metadata if k not in model.metadata]
    if missing:
        raise ModelError(f"{where} lacks {kind} metadata {missing}: re-export it with `python -m export`")
