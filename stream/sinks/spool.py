"""The delivery spool of the MQTT and webhook sinks: a bounded FIFO between the loop and one sender.

``put`` (the loop) never blocks: when the spool is full the *oldest* event is dropped and counted,
and its seq is remembered per lane, so the sender can report the hole with a ``stream.gap`` event
(``take_gaps``). The sender ``peek``s a batch (events stay in the spool), delivers it and only then
``ack``s it: an event leaves the spool once the server confirmed it, so a broker or POS outage loses
nothing until the spool overflows (at-least-once; a batch cut short is sent again in full).

``Backoff`` is the capped exponential retry delay both senders use.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from stream.events import gap_marker


class Spool:
    """Bounded FIFO of events; one producer (``put``), one consumer (``peek``/``ack``). Thread-safe."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"spool size must be at least 1, found {maxlen}")
        self.maxlen = maxlen
        self._q: deque[tuple[int, dict[str, Any]]] = deque()
        self._ticket = 0  # tickets increase by one per put: ack(t) removes everything up to t
        self._cond = threading.Condition()
        self._gaps: dict[str, list[int]] = {}  # lane -> [from_seq, to_seq, dropped]
        self.put_count = 0
        self.dropped = 0
        self.acked = 0

    def __len__(self) -> int:
        return len(self._q)

    def put(self, event: dict[str, Any]) -> None:
        with self._cond:
            if len(self._q) >= self.maxlen:
                _, old = self._q.popleft()
                self.dropped += 1
                self._remember_gap(old)
            self._ticket += 1
            self._q.append((self._ticket, event))
            self.put_count += 1
            self._cond.notify()

    def _remember_gap(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int):
            return  # a gap marker itself: the next one covers it
        gap = self._gaps.setdefault(str(event.get("lane", "default")), [seq, seq, 0])
        gap[0], gap[1], gap[2] = min(gap[0], seq), max(gap[1], seq), gap[2] + 1

    def take_gaps(self, sink: str) -> list[dict[str, Any]]:
        """``stream.gap`` events for what was dropped since the last call (one per lane)."""
        with self._cond:
            gaps, self._gaps = self._gaps, {}
        out = []
        for lane, (lo, hi, n) in sorted(gaps.items()):
            marker = gap_marker(lo, hi)
            marker.update(dropped=n, lane=lane, sink=sink)
            out.append(marker)
        return out

    def peek(self, n: int, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``n`` of the oldest (ticket, event) pairs, waiting up to ``timeout`` for the first."""
        with self._cond:
            if not self._q:
                self._cond.wait(timeout)
            return [self._q[i] for i in range(min(n, len(self._q)))]

    def ack(self, ticket: int) -> None:
        """Forget every event up to ``ticket`` (delivered)."""
        with self._cond:
            while self._q and self._q[0][0] <= ticket:
                self._q.popleft()
                self.acked += 1

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Backoff:
    """Delays ``initial, 2*initial, ...`` capped at ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2.0, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial

    def sleep(self, stop: threading.Event) -> None:
        """Wait the next delay, returning early when ``stop`` is set."""
        stop.wait(self.next())
