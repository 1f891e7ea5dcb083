"""Item and lifecycle events: one JSON object per line, versioned schema.

The schema lives in ``stream/schema/events.schema.json`` (JSON Schema draft 2020-12); its ``schema``
field value (``SCHEMA_ID``) changes whenever a field changes meaning. ``EventFactory`` is the only
place events are built, so every event carries the same envelope: ``seq`` gap-free per run starting at
1, a stable ``event_id``, capture time and the frame's age at emission.

``event_id`` is a UUID5 over (run_id, lane, type, track_id, n) where n counts events of that type for
that track (or of that type, for events without a track) in this factory; the lane enters the id only
when it is not ``default``, so single-lane ids are those of earlier versions. Re-running the same input
with the same run_id therefore reproduces the same ids, so a consumer can de-duplicate a replay.

Every event names its ``lane`` (``default`` unless configured), so many lanes can share one consumer.
Basket events (``basket.*``, built by ``stream.baskets``) add ``basket_id``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from stream.stages.zones import WHOLE_FRAME
from stream.types import UNKNOWN, Frame, Label

SCHEMA_ID = "checkout-stream/event/1"

# Fixed namespace so ids are reproducible across processes and versions of this module.
_NAMESPACE = uuid.UUID("6f0e3c1a-6c2b-5d4e-9a57-2a6a1f4c8b10")

# type -> kind. The kind decides which builder may emit it and which fields it carries.
EVENT_TYPES: dict[str, str] = {
    "item.entered": "item",
    "item.classified": "item",
    "item.left": "item",
    "source.offline": "status",
    "source.online": "status",
    "run.summary": "summary",
    "basket.opened": "basket",
    "basket.item_added": "basket",
    "basket.item_removed": "basket",
    "basket.item_relabelled": "basket",
    "basket.needs_assist": "basket",
    "basket.closed": "basket",
}

DEFAULT_LANE = "default"

# Emitted by sinks (not the factory) when a resuming consumer asked for events no longer held.
GAP_TYPE = "stream.gap"


def utc_iso(t: float) -> str:
    """Seconds since the epoch -> ``2024-05-01T12:34:56.789Z`` (UTC, milliseconds)."""
    ms_total = int(round(t * 1000.0))
    secs, ms = divmod(ms_total, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def _finite(name: str, value: Any) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, found {value!r}")
    return v


def _check_type(type_: str, kind: str) -> None:
    found = EVENT_TYPES.get(type_)
    if found is None:
        raise ValueError(f"unknown event type {type_!r}; valid types: {', '.join(EVENT_TYPES)}")
    if found != kind:
        valid = [t for t, k in EVENT_TYPES.items() if k == kind]
        raise ValueError(f"event type {type_!r} is a {found} event; this builder takes {', '.join(valid)}")


class EventFactory:
    """Builds events for one run; assigns ``seq`` and ``event_id``.

    One instance per run (per lane), used from one thread (the one that owns per-frame state):
    counters are per instance and not locked. ``clock`` must be the same clock as
    ``Frame.t_capture`` (monotonic seconds); ``wallclock`` gives ``emitted_utc``. Both are injected so
    tests and replays are deterministic.
    """

    def __init__(
        self,
        run_id: str,
        source: str,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        lane: str = DEFAULT_LANE,
    ) -> None:
        if not run_id:
            raise ValueError("EventFactory: run_id must be a non-empty string")
        if not lane or "/" in lane or "+" in lane or "#" in lane:
            raise ValueError(f"EventFactory: lane must be a non-empty name without '/', '+' or '#', found {lane!r}")
        self.run_id = run_id
        self.source = source
        self.lane = lane
        self._id_prefix = run_id if lane == DEFAULT_LANE else f"{run_id}/{lane}"
        self._clock = clock
        self._wallclock = wallclock
        self._seq = 0
        self._counts: dict[tuple[str, int | None], int] = {}

    @property
    def last_seq(self) -> int:
        """The seq of the last event built (0 before the first)."""
        return self._seq

    def _envelope(
        self, type_: str, track_id: int | None, frame_index: int | None, capture_utc: str | None, age_ms: float | None
    ) -> dict[str, Any]:
        key = (type_, track_id)
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        self._seq += 1
        tid = "-" if track_id is None else str(track_id)
        return {
            "schema": SCHEMA_ID,
            "type": type_,
            "seq": self._seq,
            "event_id": str(uuid.uuid5(_NAMESPACE, f"{self._id_prefix}/{type_}/{tid}/{n}")),
            "run_id": self.run_id,
            "lane": self.lane,
            "source": self.source,
            "track_id": track_id,
            "frame_index": frame_index,
            "capture_utc": capture_utc,
            "age_ms": age_ms,
            "emitted_utc": utc_iso(self._wallclock()),
        }

    def item(
        self,
        type: str,
        frame: Frame,
        track_id: int,
        bbox: Sequence[float],
        label: Label | None,
        *,
        zone: str = WHOLE_FRAME,
    ) -> dict[str, Any]:
        """An ``item.*`` event for one track seen in ``frame``; ``bbox`` is xyxy in source pixels,
        ``zone`` the counting zone the item is in (stream/stages/zones.py; default the whole frame).

        ``label`` None (not yet recognised) reports label "unknown", score 0, no candidates.
        """
        _check_type(type, "item")
        box = [round(_finite("bbox", v), 2) for v in bbox]
        if len(box) != 4:
            raise ValueError(f"bbox: expected 4 numbers [x1, y1, x2, y2], found {len(box)}")
        age_ms = round((self._clock() - frame.t_capture) * 1000.0, 3)
        event = self._envelope(type, int(track_id), int(frame.index), utc_iso(frame.utc_capture), age_ms)
        event["bbox"] = box
        event["zone"] = str(zone)
        if label is None:
            event.update(label=UNKNOWN, score=0.0, margin=0.0, topk=[], unknown=True)
        else:
            event.update(
                label=str(label.product),
                score=round(_finite("label.score", label.score), 6),
                margin=round(_finite("label.margin", label.margin), 6),
                topk=[{"product": str(p), "score": round(_finite("topk score", s), 6)} for p, s in label.topk],
                unknown=bool(label.unknown),
            )
        return event

    def status(self, type: str, detail: dict[str, Any], frame_index: int | None = None) -> dict[str, Any]:
        """A ``source.*`` event. No frame is at hand, so capture_utc and age_ms are null."""
        _check_type(type, "status")
        event = self._envelope(type, None, None if frame_index is None else int(frame_index), None, None)
        event["detail"] = dict(detail)
        return event

    def basket(
        self,
        type: str,
        basket_id: str,
        fields: dict[str, Any],
        *,
        track_id: int | None = None,
        frame_index: int | None = None,
        capture_utc: str | None = None,
        age_ms: float | None = None,
    ) -> dict[str, Any]:
        """A ``basket.*`` event of basket ``basket_id``; ``fields`` are the type's own (copied).

        The frame fields are those of the item event that caused it (null for a close on idle or by
        the API); ``track_id`` is the item's for item-level basket events, else null.
        """
        _check_type(type, "basket")
        tid = None if track_id is None else int(track_id)
        fi = None if frame_index is None else int(frame_index)
        event = self._envelope(type, tid, fi, capture_utc, age_ms)
        event["basket_id"] = str(basket_id)
        event.update(fields)
        return event

    def summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The final ``run.summary`` (frames read/processed/dropped, stage and age percentiles)."""
        event = self._envelope("run.summary", None, None, None, None)
        event["summary"] = dict(summary)
        return event


def gap_marker(from_seq: int, to_seq: int) -> dict[str, Any]:
    """What a sink sends instead of events ``from_seq..to_seq`` (inclusive) it no longer holds."""
    return {"schema": SCHEMA_ID, "type": GAP_TYPE, "from_seq": from_seq, "to_seq": to_seq}


def encode(event: dict[str, Any]) -> str:
    """One compact JSON line (no trailing newline). NaN/inf are rejected, as JSON has no such values."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def schema_path() -> Path:
    return Path(__file__).resolve().parent / "schema" / "events.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    # jsonschema is a dev dependency: only tests and tooling validate, the runtime never does.
    import jsonschema  # noqa: PLC0415

    schema = json.loads(schema_path().read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(event: dict[str, Any]) -> None:
    """Raise ValueError naming the first violation when ``event`` does not match the schema."""
    errors = sorted(_validator().iter_errors(event), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(map(str, err.absolute_path)) or "(top level)"
        raise ValueError(f"event does not match {SCHEMA_ID} at {where}: {err.message}")
