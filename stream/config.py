"""Typed, closed configuration.

Every default lives in ``stream/default.yaml`` (``configs/default.yaml`` links to it). A user file is
merged over it, then CLI overrides. Unknown keys, wrong types and out-of-range values are rejected with
a message naming the key. Each stage's constructor takes its own section.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def bounded(lo: float | None = None, hi: float | None = None, choices: tuple = ()) -> Any:
    """A dataclass field with no default (defaults live in default.yaml) and optional bounds."""
    return field(metadata={"lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True)
class SourceConfig:
    realtime: bool = bounded()
    transport: str = bounded(choices=("tcp", "udp"))
    open_timeout_s: float = bounded(0.1, 120)
    read_timeout_s: float = bounded(0.1, 120)
    backoff_initial_s: float = bounded(0.01, 60)
    backoff_max_s: float = bounded(0.1, 600)
    backoff_jitter: float = bounded(0.0, 1.0)
    max_pixels: int = bounded(1, 1 << 31)
    allowed_protocols: tuple[str, ...] = bounded()


@dataclass(frozen=True)
class ModelConfig:
    """Where a model comes from and how ONNX Runtime runs it."""

    path: str = bounded()
    provider: str = bounded(choices=("auto", "tensorrt", "cuda", "cpu"))
    intra_op_threads: int = bounded(0, 256)
    inter_op_threads: int = bounded(0, 256)
    trt_cache_dir: str = bounded()
    fp16: bool = bounded()
    verify_checksum: bool = bounded()


@dataclass(frozen=True)
class SegmentConfig:
    model: ModelConfig = bounded()


@dataclass(frozen=True)
class BoxesConfig:
    min_area_frac: float = bounded(0.0, 1.0)
    connectivity: int = bounded(choices=(4, 8))
    split_touching: bool = bounded()
    boundary_reach: int = bounded(1, 1000)


@dataclass(frozen=True)
class TrackConfig:
    high_threshold: float = bounded(0.0, 1.0)
    low_threshold: float = bounded(0.0, 1.0)
    new_track_threshold: float = bounded(0.0, 1.0)
    match_iou: float = bounded(0.0, 1.0)
    low_match_iou: float = bounded(0.0, 1.0)
    distance_gate: float = bounded(0.0, 10.0)
    min_hits: int = bounded(1, 1000)
    max_lost_frames: int = bounded(0, 100000)
    appearance_weight: float = bounded(0.0, 1.0)
    embedding_momentum: float = bounded(0.0, 1.0)


@dataclass(frozen=True)
class ClassifyConfig:
    model: ModelConfig = bounded()
    crops_per_frame: int = bounded(1, 256)
    refresh_frames: int = bounded(1, 100000)
    max_embeddings: int = bounded(1, 1000)
    crop_padding: float = bounded(0.0, 1.0)
    mask_background: bool = bounded()
    unknown_threshold: float = bounded(-1.0, 1.0)
    top_k: int = bounded(1, 100)
    switch_margin: float = bounded(0.0, 2.0)
    min_embeddings: int = bounded(1, 1000)


@dataclass(frozen=True)
class CatalogConfig:
    index: str = bounded(choices=("flat", "hnsw", "ivf"))
    use_gpu: bool = bounded()
    blas_threshold: int = bounded(1, 10**9)


@dataclass(frozen=True)
class EventsConfig:
    sinks: tuple[str, ...] = bounded()
    client_buffer: int = bounded(1, 1 << 20)
    replay_ring: int = bounded(0, 1 << 22)
    token: str = bounded()


@dataclass(frozen=True)
class OverlayConfig:
    mask_alpha: float = bounded(0.0, 1.0)
    show_fps: bool = bounded()
    window_name: str = bounded()


@dataclass(frozen=True)
class RuntimeConfig:
    threaded: bool = bounded()
    stats_interval_s: float = bounded(0.0, 3600)
    shutdown_timeout_s: float = bounded(0.05, 60)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = bounded()
    segment: SegmentConfig = bounded()
    boxes: BoxesConfig = bounded()
    track: TrackConfig = bounded()
    classify: ClassifyConfig = bounded()
    catalog: CatalogConfig = bounded()
    events: EventsConfig = bounded()
    overlay: OverlayConfig = bounded()
    runtime: RuntimeConfig = bounded()


def default_path() -> Path:
    return Path(str(resources.files("stream") / "default.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top, found {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        name = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{name}' (valid here: {', '.join(sorted(base))})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{name}': expected a section, found {value!r}")
            out[key] = _merge(base[key], value, name + ".")
        else:
            out[key] = value
    return out


def _convert(tp: Any, value: Any, name: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}': expected a section, found {value!r}")
        return _build(tp, value, name + ".")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{name}': expected a list, found {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{name}[{i}]", {}) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key '{name}': unions are not supported")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"config key '{name}': expected {tp.__name__}, found {value!r}")
    value = tp(value)
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices", ())
    if choices and value not in choices:
        raise ConfigError(f"config key '{name}': {value!r} is not one of {', '.join(map(str, choices))}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"config key '{name}': {value!r} is outside [{lo}, {hi}]")
    return value


def _build(cls: Any, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = f"{where}{f.name}"
        if f.name not in data:
            raise ConfigError(f"config key '{name}' is missing")
        kwargs[f.name] = _convert(hints[f.name], data[f.name], name, f.metadata)
    extra = set(data) - {f.name for f in dataclasses.fields(cls)}
    if extra:
        raise ConfigError(f"unknown config key '{where}{sorted(extra)[0]}'")
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the user file at ``path``, then ``overrides`` ({"a.b": value})."""
    data = _read_yaml(default_path())
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
    for dotted, value in (overrides or {}).items():
        data = _merge(data, _nest(dotted, value))
    cfg: Config = _build(Config, data)
    return cfg


def _nest(dotted: str, value: Any) -> dict:
    """``("a.b", v)`` -> ``{"a": {"b": v}}`` (CLI overrides)."""
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}
