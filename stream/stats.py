"""Per-run statistics: frame counters, fixed-memory percentiles of stage times and frame age, and the
end-of-run summary (the ``run.summary`` event carries the same dict)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

STAGES = ("segment", "boxes", "track", "classify", "overlay")


class Percentiles:
    """The last ``window`` samples in a preallocated ring, with p50/p95/p99: memory is fixed from the
    start, however long the stream runs."""

    def __init__(self, window: int = 100_000) -> None:
        self._v = np.zeros(window, np.float64)
        self._n = 0  # samples ever added

    def add(self, value: float) -> None:
        self._v[self._n % len(self._v)] = value
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._v))

    def summary(self) -> dict[str, float]:
        if not self._n:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
        p50, p95, p99 = np.percentile(self._v[: len(self)], [50, 95, 99])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


@dataclass
class RunStats:
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0  # stale frames replaced at capture (realtime sources only)
    frames_skipped: int = 0  # frames above source.max_fps, skipped by the source before queueing
    frames_output: int = 0  # frames drawn and handed to the outputs
    results_dropped: int = 0  # processed frames the outputs were too slow to take (realtime only)
    events: int = 0
    started: float = field(default_factory=time.monotonic)
    stages: dict[str, Percentiles] = field(default_factory=lambda: {s: Percentiles() for s in STAGES})
    frame_age: Percentiles = field(default_factory=Percentiles)
    classify: dict[str, Any] = field(default_factory=dict)  # the classifier's own counters (Classifier.stats)

    def summary(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.started, 1e-9)
        return {
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "frames_output": self.frames_output,
            "results_dropped": self.results_dropped,
            "events": self.events,
            "wall_s": round(wall, 3),
            "fps": round(self.frames_processed / wall, 2),
            "stage_ms": {s: p.summary() for s, p in self.stages.items()},
            "frame_age_ms": self.frame_age.summary(),
            "classify": self.classify,
        }


def write_summary(summary: dict[str, Any], out: IO[str]) -> None:
    """The end-of-run summary for people (the machine-readable one is the run.summary event)."""
    print(
        f"frames: read {summary['frames_read']}, processed {summary['frames_processed']}, "
        f"dropped {summary['frames_dropped']}; {summary['fps']} fps over {summary['wall_s']} s; "
        f"{summary['events']} events",
        file=out,
    )
    if summary.get("frames_skipped"):
        print(f"skipped at the source (source.max_fps): {summary['frames_skipped']} frames", file=out)
    cls = summary.get("classify") or {}
    if cls.get("crops_embedded"):
        print(
            f"classify ({cls['mode']}): {cls['crops_embedded']} crops in {cls['batches']} batches, "
            f"embed p50 {cls['embed_ms']['p50']:.0f} ms a batch, label lag p50 {cls['label_lag_ms']['p50']:.0f} ms "
            f"(crop cut -> label applied), {cls['deferred']} held back by a full queue",
            file=out,
        )
    print(f"{'stage':<10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}", file=out)
    rows = list(summary["stage_ms"].items()) + [("frame age", summary["frame_age_ms"])]
    for name, p in rows:
        print(f"{name:<10}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}", file=out)
