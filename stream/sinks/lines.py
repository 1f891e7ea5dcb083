"""Line sinks: one compact JSON line per event on stdout or appended to a file, from a thread."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any

from stream.events import encode
from stream.sinks.base import SinkError

log = logging.getLogger(__name__)


class _LineWriter:
    """A thread that encodes events and writes them as lines to a text stream.

    The hand-off is a bounded deque: when the stream is slower than the loop, events are dropped and
    counted instead of growing memory or blocking ``publish``. The publisher signals the thread only
    when it sleeps, so most publishes are one append with no lock and no system call. A broken pipe
    (the reader went away, e.g. ``| head``) makes the writer go quiet for good.
    """

    def __init__(
        self, stream: IO[str], name: str, max_queue: int, close_stream: bool, flush_timeout_s: float = 2.0
    ) -> None:
        self._stream = stream
        self._close_stream = close_stream
        self._flush_timeout_s = flush_timeout_s
        self._max_queue = max_queue
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._stop = False
        self.published = 0
        self.dropped = 0
        self.written = 0
        self.errors = 0
        self.broken_pipe = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self._thread.start()

    def publish(self, event: dict[str, Any]) -> None:
        if self.broken_pipe or self._stop or len(self._pending) >= self._max_queue:
            self.dropped += 1
            return
        self._pending.append(event)
        self.published += 1
        if self._sleeping:
            self._sleeping = False
            self._wake.set()

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake.set()
        self._thread.join(self._flush_timeout_s)
        if self._thread.is_alive():
            log.warning(
                "event sink %s did not flush within %.1f s; giving up on it", self._thread.name, self._flush_timeout_s
            )
            return
        if self._close_stream:
            with contextlib.suppress(OSError):
                self._stream.close()

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "written": self.written,
            "errors": self.errors,
            "broken_pipe": self.broken_pipe,
        }

    def _run(self) -> None:
        while not self.broken_pipe:
            # Set the flag before looking: a publish after the look then sees it and wakes us.
            self._sleeping = True
            if not self._pending and not self._stop:
                self._wake.wait()
            self._sleeping = False
            self._wake.clear()
            if not self._pending and self._stop:
                return
            lines = []
            # Drain what is already queued so one flush covers many events.
            for _ in range(min(len(self._pending), 512)):
                event = self._pending.popleft()
                try:
                    lines.append(encode(event))
                except (TypeError, ValueError) as exc:
                    self.errors += 1
                    log.error("dropping an event that cannot be encoded as JSON: %s", exc)
            if lines:
                self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
            self.written += len(lines)
        except BrokenPipeError:
            self._on_broken_pipe()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            self.errors += 1
            log.error("event sink %s: write failed: %s", self._thread.name, exc)

    def _on_broken_pipe(self) -> None:
        self.broken_pipe = True
        log.info("event sink %s: reader closed the pipe; no more events are written there", self._thread.name)
        # As the Python docs advise for SIGPIPE: point the fd at devnull so the interpreter's final
        # flush of the still-buffered text does not raise a second BrokenPipeError at exit.
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError, io.UnsupportedOperation):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


class StdoutSink:
    """One compact JSON line per event on ``stream`` (default: stdout), from a background thread."""

    def __init__(self, stream: IO[str] | None = None, max_queue: int = 4096) -> None:
        self._writer = _LineWriter(
            stream if stream is not None else sys.stdout, "stdout", max_queue, close_stream=False
        )

    def publish(self, event: dict[str, Any]) -> None:
        self._writer.publish(event)

    def close(self) -> None:
        self._writer.close()

    @property
    def broken_pipe(self) -> bool:
        return self._writer.broken_pipe

    def stats(self) -> dict[str, Any]:
        return self._writer.stats()


class JsonlFileSink:
    """Appends one JSON line per event to ``path`` (created if absent; its folder must exist)."""

    def __init__(self, path: str | Path, max_queue: int = 4096) -> None:
        self.path = Path(path)
        try:
            stream = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise SinkError(
                f"cannot open events file {self.path} for appending: {exc.strerror}; "
                "check that its folder exists and is writable"
            ) from None
        self._writer = _LineWriter(stream, f"jsonl:{self.path.name}", max_queue, close_stream=True)

    def publish(self, event: dict[str, Any]) -> None:
        self._writer.publish(event)

    def close(self) -> None:
        self._writer.close()

    def stats(self) -> dict[str, Any]:
        return self._writer.stats()
