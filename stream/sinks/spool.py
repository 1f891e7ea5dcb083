"""The delivery spool of the MQTT and webhook sinks: a bounded FIFO between the loop and one sender.

``put`` (the loop) never blocks: when the spool is full the *oldest* waiting event is dropped and
counted, and its seq is remembered per lane; the next batch starts with a ``stream.gap`` event per lane
naming the hole (delivered like any event). The sender ``peek``s a batch, which moves it from waiting
to in flight (never dropped, so a gap never names an event that was delivered; the spool holds at most
``maxlen`` waiting events plus one batch), delivers it and only then ``ack``s it. Until the ack every
``peek`` returns that same batch, so a retry resends exactly it: an event leaves the spool once the
server confirmed it, and a broker or POS outage loses nothing until the spool overflows (at-least-once).

With a ``path`` the spool is also kept on disk (``events.spool_dir``): the sender thread (never the
loop) appends new events to ``PATH.jsonl`` and records the last acknowledged ticket in ``PATH.acked``
(``persist``); a spool built on the same path after a restart starts with every event not yet
acknowledged. The file is emptied whenever everything is delivered and rewritten when it grows past
twice the spool, so it stays bounded. Writes are flushed, not fsynced: they survive the process, not
the machine losing power.

``Backoff`` is the capped exponential retry delay both senders use; ``SpooledSender`` is what the
two sinks share: ``publish`` into the spool, one sender thread, and a ``close`` that drains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stream.config import EventsConfig
from stream.events import encode, gap_marker
from stream.sinks.base import SinkError

log = logging.getLogger(__name__)
Entry = tuple[int, dict[str, Any]]


class _DiskLog:
    """``PATH.jsonl`` ({"t": ticket, "e": event} per line) and ``PATH.acked`` (the last ticket
    delivered). Used by one thread at a time (a lock guards against a close racing the sender)."""

    def __init__(self, path: Path) -> None:
        self.events = path.with_suffix(".jsonl")
        self.acked = path.with_suffix(".acked")
        self.lines = 0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> list[Entry]:
        """Entries not yet acknowledged, in order; a line cut short by a crash is skipped."""
        try:
            acked = int(self.acked.read_text() or 0)
        except (OSError, ValueError):
            acked = 0
        out: list[Entry] = []
        try:
            with open(self.events, encoding="utf-8") as f:
                for line in f:
                    self.lines += 1
                    try:
                        rec = json.loads(line)
                        ticket, event = int(rec["t"]), rec["e"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if ticket > acked:
                        out.append((ticket, event))
        except FileNotFoundError:
            pass
        return out

    def append(self, entries: Iterable[Entry]) -> None:
        lines = [encode({"t": t, "e": e}) + "\n" for t, e in entries]
        if lines:
            with self._lock, open(self.events, "a", encoding="utf-8") as f:
                f.writelines(lines)
                self.lines += len(lines)

    def rewrite(self, entries: list[Entry]) -> None:
        with self._lock:
            tmp = self.events.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(encode({"t": t, "e": e}) + "\n" for t, e in entries)
            os.replace(tmp, self.events)
            self.lines = len(entries)

    def mark_acked(self, ticket: int) -> None:
        with self._lock:
            tmp = self.acked.with_suffix(".acked-tmp")
            tmp.write_text(str(ticket))
            os.replace(tmp, self.acked)


class Spool:
    """Bounded FIFO of events; one producer (``put``), one consumer (``peek``/``ack``). Thread-safe."""

    def __init__(self, maxlen: int, sink: str, path: Path | None = None) -> None:
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
        self.restored = 0  # events read back from disk at start
        self._unsaved: list[Entry] = []
        self._acked_ticket = 0
        self._saved_ack = 0
        self._disk: _DiskLog | None = None
        if path is not None:
            try:
                self._restore(path)
            except OSError as exc:
                raise SinkError(
                    f"{sink} spool: cannot keep it in {path.parent}: {exc.strerror}; set events.spool_dir to a "
                    'writable folder, or to "" for memory only'
                ) from None

    def _restore(self, path: Path) -> None:
        disk = self._disk = _DiskLog(path)
        for ticket, event in disk.load():
            self._insert(ticket, event)
            self._ticket = ticket
            self.restored += 1
        if self.restored:
            log.info("%s spool: %d undelivered events restored from %s", self.sink, self.restored, disk.events)
        disk.rewrite(list(self._q))  # compacted: only what is still to send

    def __len__(self) -> int:
        return len(self._q) + len(self._inflight)

    def put(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._ticket += 1
            self._insert(self._ticket, event)
            if self._disk is not None:
                self._unsaved.append((self._ticket, event))
            self.put_count += 1
            self._cond.notify()

    def _insert(self, ticket: int, event: dict[str, Any]) -> None:
        if len(self._q) >= self.maxlen:
            _, old = self._q.popleft()
            self.dropped += 1
            self._remember_gap(old)
        self._q.append((ticket, event))

    def persist(self) -> None:
        """Mirror new events and the last ack to disk (the sender's thread; nothing without a path)."""
        if self._disk is None:
            return
        with self._cond:
            unsaved, self._unsaved = self._unsaved, []
            acked = self._acked_ticket
            empty = not self._q and not self._inflight
            pending = [e for e in self._inflight if e[0] >= 0] + list(self._q)
        try:
            if empty:
                if self._disk.lines:
                    self._disk.rewrite([])
            elif self._disk.lines + len(unsaved) > 2 * self.maxlen + len(pending):
                self._disk.rewrite(pending)
            else:
                self._disk.append(unsaved)
            if acked != self._saved_ack:
                self._disk.mark_acked(acked)
                self._saved_ack = acked
        except OSError as exc:  # a full or read-only disk: memory still holds the events
            log.warning("%s spool: cannot write %s: %s", self.sink, self._disk.events, exc)

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
            self._acked_ticket = max(self._acked_ticket, ticket)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def spool_path(cfg: EventsConfig, sink: str, target: str) -> Path | None:
    """Where a sink keeps its spool on disk (``events.spool_dir``; None = memory only): one file set
    per sink and target, so two sinks never share one."""
    if not cfg.spool_dir:
        return None
    digest = hashlib.sha1(target.encode(), usedforsecurity=False).hexdigest()[:12]
    return Path(cfg.spool_dir).expanduser() / f"{sink}-{digest}"


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


class SpooledSender:
    """The loop's side of a delivery sink: ``publish`` only puts into the spool (never blocks); one
    daemon thread runs ``_run`` (the subclass's sender: ``peek``, deliver, ``ack``); ``close`` waits up
    to ``close_timeout_s`` for the spool to drain, stops the sender, persists the spool and counts
    what is left as ``undelivered`` (logged with ``_away()``, the subclass's reason). Subclasses call
    ``__init__`` first, build their own state, then ``_start``."""

    def __init__(self, spool: Spool, close_timeout_s: float) -> None:
        self._spool = spool
        self.close_timeout_s = close_timeout_s
        self._stop = threading.Event()
        self._closing = False
        self.published = 0
        self.undelivered = 0

    def _start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def _away(self) -> str:
        """Why events may be left at close, for the warning (e.g. "broker away")."""
        raise NotImplementedError

    def publish(self, event: dict[str, Any]) -> None:
        self._spool.put(event)
        self.published += 1

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        deadline = time.monotonic() + self.close_timeout_s
        while len(self._spool) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._spool.wake()
        # Not waiting out a delivery in flight: its batch is still in the spool, so counted below.
        self._thread.join(max(0.1, deadline - time.monotonic()))
        self._spool.persist()
        self.undelivered = len(self._spool)
        if self.undelivered:
            log.warning("%s: %d events not delivered at close (%s)", self, self.undelivered, self._away())
