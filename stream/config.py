"""Typed, closed configuration (pydantic models).

Every default lives in ``stream/default.yaml`` (``configs/default.yaml`` links to it), so no field here
has a default of its own. A user file is merged over the defaults, then CLI overrides; the result is
validated strictly: unknown keys, wrong types (no coercion: ``"3"`` is not an int, ``true`` is not a
number) and out-of-range values are a ``ConfigError`` naming the key. Each stage's constructor takes
its own section. ``config_schema()`` is the JSON Schema of the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class Section(BaseModel):
    """A closed, frozen, strictly typed config section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _list() -> Any:
    """A list in YAML, a tuple in Python (sections are frozen)."""
    return Field(strict=False)


class SourceConfig(Section):
    realtime: bool
    transport: Literal["tcp", "udp"]
    open_timeout_s: float = Field(ge=0.1, le=120)
    read_timeout_s: float = Field(ge=0.1, le=120)
    backoff_initial_s: float = Field(ge=0.01, le=60)
    backoff_max_s: float = Field(ge=0.01, le=600)
    backoff_jitter: float = Field(ge=0.0, le=1.0)
    max_pixels: int = Field(ge=1, le=1 << 31)
    max_fps: float = Field(ge=0.0, le=1000)
    allowed_protocols: tuple[str, ...] = _list()


class ModelConfig(Section):
    """Where a model comes from and how ONNX Runtime runs it."""

    path: str
    provider: Literal["auto", "tensorrt", "cuda", "cpu"]
    intra_op_threads: int = Field(ge=0, le=256)
    inter_op_threads: int = Field(ge=0, le=256)
    trt_cache_dir: str
    fp16: bool
    verify_checksum: bool


class SegmentConfig(Section):
    model: ModelConfig
    batch_window_ms: float = Field(ge=0.0, le=100.0)


class BoxesConfig(Section):
    min_area_frac: float = Field(ge=0.0, le=1.0)
    connectivity: Literal[4, 8]
    split_touching: bool
    boundary_reach: int = Field(ge=1, le=1000)
    weak_boundary: float = Field(ge=0.0, le=1.0)
    weak_boundary_area: float = Field(ge=0.0, le=1.0)


class TrackConfig(Section):
    high_threshold: float = Field(ge=0.0, le=1.0)
    low_threshold: float = Field(ge=0.0, le=1.0)
    new_track_threshold: float = Field(ge=0.0, le=1.0)
    match_iou: float = Field(ge=0.0, le=1.0)
    low_match_iou: float = Field(ge=0.0, le=1.0)
    distance_gate: float = Field(ge=0.0, le=10.0)
    min_hits: int = Field(ge=1, le=1000)
    max_lost_frames: int = Field(ge=0, le=100000)


class ClassifyConfig(Section):
    model: ModelConfig
    crops_per_s: float = Field(ge=0.1, le=10000)
    batch: int = Field(ge=1, le=256)
    queue: int = Field(ge=1, le=4096)
    worker: Literal["auto", "thread", "inline"]
    worker_nice: int = Field(ge=0, le=19)
    refresh_frames: int = Field(ge=1, le=100000)
    max_embeddings: int = Field(ge=1, le=1000)
    crop_padding: float = Field(ge=0.0, le=1.0)
    mask_background: bool
    unknown_threshold: float = Field(ge=-1.0, le=1.0)
    unknown_margin: float = Field(ge=0.0, le=2.0)
    unknown_cohort: int = Field(ge=1, le=100)
    top_k: int = Field(ge=1, le=100)
    switch_margin: float = Field(ge=0.0, le=2.0)
    min_embeddings: int = Field(ge=1, le=1000)


class CatalogConfig(Section):
    index: Literal["flat", "hnsw", "ivf"]
    use_gpu: bool
    blas_threshold: int = Field(ge=1, le=10**9)
    item_views: bool


class MqttConfig(Section):
    """The MQTT sink's broker session (``--events mqtt://HOST:PORT[/PREFIX]``)."""

    username: str
    password: str
    tls: bool
    ca_file: str
    keepalive_s: int = Field(ge=5, le=3600)


class WebhookConfig(Section):
    """The webhook sink (``--events https://...``)."""

    batch: int = Field(ge=1, le=10000)
    timeout_s: float = Field(ge=0.1, le=120)
    token: str


class EventsConfig(Section):
    sinks: tuple[str, ...] = _list()
    client_buffer: int = Field(ge=1, le=1 << 20)
    replay_ring: int = Field(ge=0, le=1 << 22)
    token: str
    spool: int = Field(ge=1, le=1 << 24)
    spool_dir: str
    retry_initial_s: float = Field(ge=0.01, le=60)
    retry_max_s: float = Field(ge=0.01, le=600)
    drain_timeout_s: float = Field(ge=0.0, le=600)
    mqtt: MqttConfig
    webhook: WebhookConfig


class BasketConfig(Section):
    """The basket layer over the item lifecycle (``stream.baskets``)."""

    enabled: bool
    mode: Literal["tray", "belt"]
    idle_close_s: float = Field(ge=0.1, le=86400)
    assist_unknown: bool
    assist_min_margin: float = Field(ge=0.0, le=2.0)
    assist_max_items: int = Field(ge=1, le=10000)


class OverlayConfig(Section):
    mask_alpha: float = Field(ge=0.0, le=1.0)
    show_fps: bool
    window_name: str


class HttpConfig(Section):
    """The operations HTTP server (stream.outputs.http): health, metrics and the live view."""

    bind: str
    live_fps: float = Field(ge=0.5, le=30)
    jpeg_quality: int = Field(ge=10, le=100)
    live_max_width: int = Field(ge=64, le=8192)
    last_events: int = Field(ge=0, le=1000)
    ready_frames_s: float = Field(ge=0.1, le=3600)
    max_clients: int = Field(ge=1, le=256)
    client_timeout_s: float = Field(ge=0.1, le=60)


Point = Annotated[tuple[float, float], Field(strict=False)]


class ZoneConfig(Section):
    """A counting polygon in source pixels (see stream/stages/zones.py)."""

    name: str = Field(min_length=1)
    polygon: tuple[Point, ...] = Field(strict=False, min_length=3)


class StationConfig(Section):
    """A station profile (``checkout-stream station create``) and the counting zones."""

    path: str
    zones: tuple[ZoneConfig, ...] = _list()


LANE_NAME = r"^[A-Za-z0-9_.:-]+$"  # also an MQTT topic level and a Prometheus label value


class LaneConfig(Section):
    """Which lane this is: its name is on every event, frames-log record and metric."""

    name: str = Field(min_length=1, max_length=64, pattern=LANE_NAME)


class RuntimeConfig(Section):
    threaded: bool
    stats_interval_s: float = Field(ge=0.0, le=3600)
    shutdown_timeout_s: float = Field(ge=0.05, le=60)


class Config(Section):
    source: SourceConfig
    segment: SegmentConfig
    boxes: BoxesConfig
    track: TrackConfig
    classify: ClassifyConfig
    catalog: CatalogConfig
    events: EventsConfig
    basket: BasketConfig
    overlay: OverlayConfig
    http: HttpConfig
    station: StationConfig
    lane: LaneConfig
    runtime: RuntimeConfig


S = TypeVar("S", bound=Section)


def replace(section: S, **changes: Any) -> S:
    """A copy of ``section`` with ``changes``, validated like a loaded file."""
    return _validate(type(section), {**section.model_dump(), **changes})


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a complete config file."""
    return Config.model_json_schema()


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
    """``over`` merged into ``base`` section by section; a key ``base`` lacks is an error that lists
    the valid ones."""
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


def _validate(cls: type[S], data: dict) -> S:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown config key '{key}'") from None
        if err["type"] == "missing":
            raise ConfigError(f"config key '{key}' is missing") from None
        raise ConfigError(f"config key '{key}': {err['msg']} (found {err['input']!r})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the user file at ``path``, then ``overrides`` ({"a.b": value})."""
    data = _read_yaml(default_path())
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
    for dotted, value in (overrides or {}).items():
        data = _merge(data, _nest(dotted, value))
    return _validate(Config, data)


def _nest(dotted: str, value: Any) -> dict:
    """``("a.b", v)`` -> ``{"a": {"b": v}}`` (CLI overrides)."""
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


# ------------------------------------------------------------------------------------- lanes (run --lanes)

# A lane entry's own keys; every other key of an entry is a config section overriding the shared config.
LANE_KEYS = ("name", "source", "station", "catalog", "zone")
# Settings of the process, not of a lane: every lane must agree on them.
SHARED_KEYS = ("http.bind", "events.token", "segment.batch_window_ms")


class LaneEntry(Section):
    """One entry of a lanes file's ``lanes:`` list (its config overrides are checked separately)."""

    name: str = Field(min_length=1, max_length=64, pattern=LANE_NAME)
    source: str = Field(min_length=1)
    station: str | None = None
    catalog: str | None = None
    zone: str | list[Point] | None = None


@dataclass(frozen=True)
class LaneSpec:
    """A lane of ``run --lanes``: its name, its source spec, its catalog folder (None: the run's
    ``--catalog``) and its complete, validated config (``cfg.lane.name == name``)."""

    name: str
    source: str
    catalog: str | None
    config: Config


def _zone_points(zone: str | list[tuple[float, float]]) -> list[list[float]]:
    """``"x,y x,y x,y"`` (as ``station create --zone``) or ``[[x, y], ...]`` -> a polygon."""
    if not isinstance(zone, str):
        points = [list(p) for p in zone]
    else:
        try:
            points = [[float(v) for v in pair.split(",")] for pair in zone.split()]
        except ValueError:
            points = []
        if not all(len(p) == 2 for p in points):
            points = []
    if len(points) < 3:
        raise ConfigError(f"zone {zone!r}: expected at least 3 points, 'x,y x,y x,y' or [[x, y], ...]")
    return points


def load_lanes(
    path: str | Path, config_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> list[LaneSpec]:
    """The lanes of a lanes file: ``lanes: [{name, source, station?, catalog?, zone?, <section>: {...}}]``
    plus, at the top, any config sections shared by every lane. Each lane's config is the defaults,
    then ``config_path``, then the file's shared sections, then the lane's own sections (``station``
    and ``zone`` set ``station.path`` and ``station.zones``), then ``overrides`` (the CLI's); each is
    validated like a config file, and an error names the lane and the key."""
    where = f"lanes file {path}"
    doc = _read_yaml(Path(path))
    entries = doc.pop("lanes", None)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: expected 'lanes:' with a list of lanes ({{name, source, ...}}), found {entries!r}")
    base = _read_yaml(default_path())
    if config_path is not None:
        base = _merge(base, _read_yaml(Path(config_path)))
    try:
        base = _merge(base, doc)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    lanes: list[LaneSpec] = []
    for i, entry in enumerate(entries, 1):
        lanes.append(_lane(base, entry, f"{where}: lane #{i}", lanes, overrides or {}))
    first = lanes[0].config
    for lane in lanes[1:]:
        for key in SHARED_KEYS:
            if _get(lane.config, key) != _get(first, key):
                raise ConfigError(
                    f"{where}: lane '{lane.name}': {key} is {_get(lane.config, key)!r} but lane "
                    f"'{lanes[0].name}' has {_get(first, key)!r}; it is one setting for the whole process"
                )
    # Lanes with the same events section share its sinks; different sections get sinks of their own,
    # which must not write one on-disk spool.
    spools: dict[str, tuple[str, EventsConfig]] = {}
    for lane in lanes:
        ev = lane.config.events
        other = spools.setdefault(ev.spool_dir, (lane.name, ev)) if ev.spool_dir else None
        if other is not None and other[1] != ev:
            raise ConfigError(
                f"{where}: lane '{lane.name}' has other events settings than lane '{other[0]}' but the same "
                f"events.spool_dir {ev.spool_dir!r}; give each its own spool_dir, or the same events section"
            )
    return lanes


def _lane(base: dict, entry: Any, label: str, earlier: list[LaneSpec], overrides: dict[str, Any]) -> LaneSpec:
    """One lanes-file entry over the shared config ``base``; errors name the lane."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{label}: expected a mapping {{name, source, ...}}, found {entry!r}")
    if isinstance(entry.get("name"), str):
        label = label.rsplit(": ", 1)[0] + f": lane '{entry['name']}'"
    try:
        own = _validate(LaneEntry, {k: v for k, v in entry.items() if k in LANE_KEYS})
        if any(lane.name == own.name for lane in earlier):
            raise ConfigError(f"lane name '{own.name}' is used twice (each lane needs its own)")
        rest = {k: v for k, v in entry.items() if k not in LANE_KEYS}
        if "name" in (rest.get("lane") or {}):
            raise ConfigError("set the lane's name with 'name:', not 'lane.name'")
        data = _merge(_merge(base, rest), {"lane": {"name": own.name}})
        if own.station is not None:
            data = _merge(data, {"station": {"path": own.station}})
        if own.zone is not None:
            data = _merge(data, {"station": {"zones": [{"name": "zone1", "polygon": _zone_points(own.zone)}]}})
        for dotted, value in overrides.items():
            data = _merge(data, _nest(dotted, value))
        cfg = _validate(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    return LaneSpec(own.name, own.source, own.catalog, cfg)


def _get(cfg: Section, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
