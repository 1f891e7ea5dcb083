"""What a run takes from the ``station`` config section: the profile, its fitted model and the zones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.config import Config, SegmentConfig, replace
from stream.stages.station import Station, load_station
from stream.stages.zones import Zone, zones_from_config


def load(cfg: Config) -> Station | None:
    """The station profile named by ``station.path`` (None when empty)."""
    return load_station(Path(cfg.station.path).expanduser()) if cfg.station.path else None


def segment_config(cfg: Config, station: Station | None) -> SegmentConfig:
    """``cfg.segment`` with the station's fitted segmenter when the profile has one."""
    if station is None or station.model is None:
        return cfg.segment
    # A fitted model has no entry in the shipped checksum manifest: it is the station's own file.
    return replace(cfg.segment, model=replace(cfg.segment.model, path=str(station.model), verify_checksum=False))


def zones(cfg: Config, station: Station | None) -> tuple[Zone, ...]:
    """The config's zones, else the profile's, else none (the whole frame)."""
    if cfg.station.zones:
        return tuple(Zone(z.name, np.asarray(z.polygon, np.float64)) for z in cfg.station.zones)
    return zones_from_config(station.zones) if station is not None else ()
