"""The delivery spool of the MQTT and webhook sinks: a bounded FIFO between the loop and one sender.

``put`` (the loop) never blocks: when the spool is full the *oldest* waiting event is dropped and
counted, and its seq is remembered per lane; the next batch starts with a ``stream.gap`` event per lane
naming the hole (delivered like any event). The sender ``peek``s a batch, which moves it from waiting
to in flight (never dropped, so a gap never names an event that was delivered; the spool holds at most
``maxlen`` waiting events plus one batch), delivers it and only then ``ack``s it. Until the ack every
``peek`` returns that same batch, so a retry resends exactly it: an event leaves the spool once the
server confirmed it, and a broker or POS outage loses nothing until the spool overflows (at-least-once).

``Backoff`` is the capped exponential retry delay both senders use.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from stream.events import gap_marker


class Spool:
    """Bounded FIFO of events; one producer (``put``), one consumer (``peek``/``ack``). Thread-safe."""

    def __init__(self, maxlen: int, sink: str) -> None:
        if maxlen < 1:
            raise ValueError(f"spool size must be at least 1, found {maxlen}")
        self.maxlen = maxlen
        self.sink = sink
        self._q: deque[tuple[int, dict[str, Any]]] = deque()  # waiting
        self._inflight: list[tuple[int, dict[str, Any]]] = []
        self._ticket = 0  # tickets increase by one per put: ack(t) removes everything up to t
        self._cond = threading.Condition()
        self._gaps: dict[str, list[int]] = {}  # lane -> [from_seq, to_seq, dropped]
        self.put_count = 0
        self.dropped = 0
        self.acked = 0

    def __len__(self) -> int:
        return len(self._q) + len(self._inflight)

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

    def _take_gaps(self) -> list[tuple[int, dict[str, Any]]]:
        """(-1, ``stream.gap``) per lane for what was dropped since the last batch (lock held)."""
        gaps, self._gaps = self._gaps, {}
        out = []
        for lane, (lo, hi, n) in sorted(gaps.items()):
            marker = gap_marker(lo, hi)
            marker.update(dropped=n, lane=lane, sink=self.sink)
            out.append((-1, marker))
        return out

    def peek(self, n: int, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """The batch in flight, or up to ``n`` of the oldest waiting (ticket, event) pairs made the batch
        in flight (after a gap marker per lane when events were dropped; their ticket is -1), waiting up
        to ``timeout`` for the first."""
        with self._cond:
            if not self._inflight:
                if not self._q:
                    self._cond.wait(timeout)
                batch = [self._q.popleft() for _ in range(min(n, len(self._q)))]
                self._inflight = self._take_gaps() + batch if batch else []
            return list(self._inflight)

    def ack(self, ticket: int) -> None:
        """Forget the batch in flight up to ``ticket`` (delivered)."""
        with self._cond:
            keep = [item for item in self._inflight if item[0] > ticket]
            self.acked += len(self._inflight) - len(keep)
            self._inflight = keep

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
