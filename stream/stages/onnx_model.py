"""Loading an ONNX model into ONNX Runtime: model resolution, checksum, providers, metadata.

Shared by the segment and embed stages. Providers come from an explicit table; ``auto`` tries
TensorRT (with engine and timing caches on disk), then CUDA, then CPU, and a fallback is a warning.
On a GPU provider every run goes through IO binding (``BoundRunner``): the uint8 input is copied to
the device into a buffer kept between calls, and only the outputs the caller names come back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stream.config import ModelConfig

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
MANIFEST = "MODELS.json"  # {name: {"file": ..., "sha256": ...}} beside the shipped models

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # their tensors live on 'cuda'
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
        name = spec[len(BUILTIN_PREFIX) :]
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


def provider_options(name: str, cfg: ModelConfig) -> dict[str, Any]:
    """ONNX Runtime options for provider ``name`` from the model's config. TensorRT keeps its engines
    and its timing cache in ``cfg.trt_cache_dir`` (created here), so a second start with the same model,
    GPU and TensorRT version loads the engine instead of rebuilding it; ``cfg.fp16`` lets it pick fp16
    kernels. Other providers take no options."""
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


def device_of(provider: str) -> str:
    """The ORT device name ('cuda' or 'cpu') where ``provider`` keeps its tensors."""
    return "cuda" if provider in GPU_PROVIDERS else "cpu"


class BoundRunner:
    """Runs one session through ORT IO binding on ``device`` ('cpu' or 'cuda').

    Each input is copied once from host into a device buffer kept between calls of the same shape and
    dtype (re-made when the shape changes); only the outputs named in ``fetch`` are bound, allocated on
    the device, and copied back to host. Results equal ``session.run(fetch, feeds)``. Not thread-safe:
    one runner per calling thread (the buffers are reused).
    """

    def __init__(self, session: ort.InferenceSession, device: str) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"BoundRunner: device must be 'cpu' or 'cuda', found {device!r}")
        self._session, self.device = session, device
        self._buffers: dict[str, ort.OrtValue] = {}

    def _device_input(self, name: str, array: np.ndarray) -> ort.OrtValue:
        array = np.ascontiguousarray(array)
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape()) != array.shape or buf.data_type() != _ort_type(array):
            buf = ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)
            self._buffers[name] = buf
        else:
            buf.update_inplace(array)
        return buf

    def run(self, fetch: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, self._device_input(name, array))
        for name in fetch:
            binding.bind_output(name, self.device)
        self._session.run_with_iobinding(binding)
        return [value.numpy() for value in binding.get_outputs()]


def _ort_type(array: np.ndarray) -> str:
    names = {
        np.dtype(np.uint8): "tensor(uint8)",
        np.dtype(np.float32): "tensor(float)",
        np.dtype(np.float16): "tensor(float16)",
        np.dtype(np.int64): "tensor(int64)",
    }
    return names.get(array.dtype, f"tensor({array.dtype})")


@dataclass(frozen=True)
class LoadedModel:
    """An ONNX Runtime session with its metadata and identity. ``run`` goes through IO binding when
    ``io_binding`` is set (``load_model`` sets it on GPU providers), else through ``session.run``."""

    session: ort.InferenceSession
    path: Path
    sha256: str
    metadata: dict[str, str]
    provider: str
    io_binding: bool = False
    _runners: dict[int, BoundRunner] = field(default_factory=dict, repr=False, compare=False)

    def run(self, fetch: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs named in ``fetch`` (host numpy arrays, in that order) for ``feeds``."""
        if not self.io_binding:
            return list(self.session.run(list(fetch), dict(feeds)))
        key = threading.get_ident()
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners.setdefault(key, BoundRunner(self.session, device_of(self.provider)))
        return runner.run(fetch, feeds)

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
            str(path), sess_options=opts, providers=[(p, provider_options(p, cfg)) for p in chain]
        )
    except Exception as exc:  # ORT raises several private exception types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {path}: {first}") from None
    active = session.get_providers()[0]
    if active != wanted and cfg.provider != "auto":
        log.warning("model %s: %s unavailable, running on %s", path.name, wanted, active)
    elif chain and active != chain[0]:  # installed but failed to start (e.g. TensorRT libraries missing)
        log.warning("model %s: %s present but not usable, running on %s", path.name, chain[0], active)
    log.info("model %s on %s", path.name, active)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return LoadedModel(
        session=session,
        path=path,
        sha256=sha256_file(path),
        metadata=meta,
        provider=active,
        io_binding=active in GPU_PROVIDERS,
    )


def check_io(
    model: LoadedModel,
    *,
    kind: str,
    input_name: str,
    input_shape: str,
    outputs: tuple[tuple[str, str], ...],
    metadata: tuple[str, ...],
    config_key: str,
) -> None:
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
            raise ModelError(f"{where} is not {a_kind}: expected outputs {want}, found {sorted(found_out.items())}")
    missing = [k for k in metadata if k not in model.metadata]
    if missing:
        raise ModelError(f"{where} lacks {kind} metadata {missing}: re-export it with `python -m export`")
