"""checkout-stream: segment, track and recognise items on a checkout counter, as a library.

The public API is ``__all__``; everything else is internal and may change. Names are imported on first
use (PEP 562), so ``import stream`` and the CLI's ``--help`` stay fast.

    from stream import MemorySink, build_runtime, load_config, open_source

    cfg = load_config()
    sink = MemorySink()
    rt = build_runtime(cfg, lambda on_status, stop: open_source("clip.mp4", cfg.source, on_status, stop), sink)
    summary = rt.run()
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "stream.config",
    "ConfigError": "stream.config",
    "load_config": "stream.config",
    "load_lanes": "stream.config",
    "LaneSpec": "stream.config",
    "run_lanes": "stream.lanes",
    "build_runtime": "stream.app",
    "load_recognition": "stream.app",
    "Runtime": "stream.runtime",
    "Pipeline": "stream.pipeline",
    "open_source": "stream.sources.file",
    "Source": "stream.sources.base",
    "SourceError": "stream.sources.base",
    "SourceProperties": "stream.sources.base",
    "MemorySink": "stream.sinks.base",
    "Frame": "stream.types",
    "SegMap": "stream.types",
    "Detections": "stream.types",
    "Tracks": "stream.types",
    "Label": "stream.types",
    "Match": "stream.types",
    "TrackView": "stream.types",
    "FrameResult": "stream.types",
}

__all__ = [
    "Config",
    "ConfigError",
    "Detections",
    "Frame",
    "FrameResult",
    "Label",
    "LaneSpec",
    "Match",
    "MemorySink",
    "Pipeline",
    "Runtime",
    "SegMap",
    "Source",
    "SourceError",
    "SourceProperties",
    "TrackView",
    "Tracks",
    "build_runtime",
    "load_config",
    "load_lanes",
    "load_recognition",
    "open_source",
    "run_lanes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
