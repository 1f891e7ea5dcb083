"""The sink seam: what every event sink does, its error type, and the in-memory sink.

A sink's ``publish`` never blocks the loop: it hands the event to a background thread (a bounded
queue; full -> drop and count) or keeps it in memory. ``publish`` is called from one thread (the loop).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, runtime_checkable


class SinkError(ValueError):
    """A sink spec is malformed, or a sink cannot start (bad path, refused bind)."""


@runtime_checkable
class Sink(Protocol):
    def publish(self, event: dict[str, Any]) -> None:
        """Hand one event over without blocking (drop and count when the sink cannot keep up)."""

    def close(self) -> None:
        """Flush what is queued (bounded in time) and release resources."""

    def stats(self) -> dict[str, Any]:
        """Counters: at least ``published``; ``dropped`` and ``clients_cut`` where they apply."""


class MemorySink:
    """Keeps the newest ``maxlen`` events in memory: for embedding the pipeline in a program (and for
    tests and benchmarks), where events are read back as Python dicts rather than lines."""

    def __init__(self, maxlen: int = 1_000_000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=maxlen)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def publish(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def close(self) -> None:
        """Nothing to flush."""

    def stats(self) -> dict[str, Any]:
        return {"published": len(self._events)}
