"""Live sources: network streams (PyAV) and cameras (OpenCV), reconnecting forever.

Each live source owns one worker thread that connects, decodes and reconnects; ``read()`` takes the
worker's output through a one-item handoff. The thread exists because FFmpeg and V4L2 calls block
(a stalled socket blocks until the read timeout): with the blocking call on the worker, ``read()``
still returns within ``POLL_S`` of ``stop`` being set. Status events travel through the same handoff
as frames, so ``on_status`` runs on the caller's thread, in order with the frames.
"""

from __future__ import annotations

import abc
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import av
import av.error
import cv2
import numpy as np

from stream.config import SourceConfig
from stream.sources.base import (
    DamagedStream,
    RateCap,
    Source,
    SourceProperties,
    SourceStatus,
    Stalled,
    StatusCallback,
    analysis_image,
    captured,
    configure_decoder,
    decode_video,
    describe,
    redact,
)
from stream.types import Frame

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting read() or handoff looks at stop/close
JOIN_S = 1.0  # close() waits this long for the worker; a worker stuck in FFmpeg exits at its timeout
# Probe little: a live stream's parameters are in its SDP and first keyframe, and every byte probed
# is start-up latency after each reconnect.
ANALYZE_DURATION_US = 500_000
PROBE_SIZE = 500_000

_Item = Frame | SourceStatus


class Outage(Exception):
    """The live source is down; the message is the redacted reason."""


def backoff_delay(attempt: int, cfg: SourceConfig, u: float) -> float:
    """Seconds to wait before reconnect ``attempt`` (1-based): initial * 2^(attempt-1), capped at
    ``backoff_max_s``, spread by +-``backoff_jitter`` (``u`` uniform in [-1, 1]) so many lanes do not
    hammer a recovering server in lock step."""
    base = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2.0 ** min(max(attempt - 1, 0), 30))
    return max(0.0, base * (1.0 + cfg.backoff_jitter * u))


class LiveSource(Source):
    """Connect -> frames -> outage -> backoff -> connect ..., on a worker thread, until stopped.

    Subclasses implement ``_images()``: connect, yield (BGR uint8 image, the same scaled to
    ``analysis_size`` or None), raise Outage (or return, a clean end) when the stream goes down, and
    release the device in ``finally``.
    """

    def __init__(
        self,
        name: str,
        cfg: SourceConfig,
        on_status: StatusCallback | None,
        stop: threading.Event | None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = redact(name)
        self.decode_errors = 0
        self.reconnects = 0
        self._cfg = cfg
        self._on_status = on_status
        self._stop = stop if stop is not None else threading.Event()
        self._closed = threading.Event()
        self._rng = rng if rng is not None else random.Random()
        self._handoff: queue.Queue[_Item] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._index = 0  # frames received, skipped ones included
        self._cap = RateCap(cfg.max_fps)
        self.frames_skipped = 0
        self._ever_up = False
        self._properties = SourceProperties(name=self.name, is_live=True, realtime=True)
        self._fps: float | None = None  # the current connection's nominal rate, when it says

    @property
    def properties(self) -> SourceProperties:
        return self._properties

    @abc.abstractmethod
    def _images(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]: ...

    def read(self) -> Frame | None:
        if self._thread is None and not self._halted():
            # Connect on first read, not in the constructor: a frame decoded before the consumer
            # is ready would be stale by the time it is read.
            self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)
            self._thread.start()
        while not self._halted():
            try:
                item = self._handoff.get(timeout=POLL_S)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    return None
                continue
            if isinstance(item, Frame):
                return item
            if self._on_status is not None:
                self._on_status(item)
        return None

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_S)

    def _halted(self) -> bool:
        return self._stop.is_set() or self._closed.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop/close; True when halted."""
        deadline = time.monotonic() + seconds
        while not self._halted():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, POLL_S))
        return True

    def _deliver(self, item: _Item) -> bool:
        """Hand ``item`` to read(), waiting while the previous one is unread; False when halted."""
        while not self._halted():
            try:
                self._handoff.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        attempt = 0  # failed connections since frames last flowed
        while not self._halted():
            reason = "end of stream"  # a live source that ends cleanly is an outage too
            try:
                for image, small in self._images():
                    if attempt >= 0:  # first frame of this connection
                        attempt = -1
                        if not self._went_online(image):
                            return
                    if not self._deliver(self._frame(image, small)):
                        return
            except Outage as exc:
                reason = str(exc)
            except Exception as exc:  # a live source must outlive any single failure
                reason = f"unexpected {type(exc).__name__}: {describe(exc)}"
                log.warning("%s: %s", self.name, reason, exc_info=log.isEnabledFor(logging.DEBUG))
            if self._halted():
                return
            # attempt == -1: frames were flowing, so this is a new outage; report it once.
            attempt = 1 if attempt < 0 else attempt + 1
            if attempt == 1:
                log.warning("%s: offline (%s); reconnecting", self.name, reason)
                if not self._deliver(SourceStatus("source.offline", {"reason": reason, "attempt": attempt})):
                    return
            delay = backoff_delay(attempt, self._cfg, self._rng.uniform(-1.0, 1.0))
            log.info("%s: connect attempt %d failed (%s); next in %.2f s", self.name, attempt, reason, delay)
            if self._sleep(delay):
                return

    def _went_online(self, image: np.ndarray) -> bool:
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = True
        h, w = image.shape[:2]
        log.info("%s: online (%dx%d, reconnects=%d)", self.name, w, h, self.reconnects)
        self._properties = replace(self._properties, width=int(w), height=int(h), fps=self._fps)
        return self._deliver(
            SourceStatus("source.online", {"width": int(w), "height": int(h), "reconnects": self.reconnects})
        )

    def _admit(self) -> bool:
        """False for a frame above ``source.max_fps`` (by arrival time): counted, never converted
        or queued."""
        if self._cap.admit(time.monotonic()):
            return True
        self.frames_skipped += 1
        self._index += 1
        return False

    def _frame(self, image: np.ndarray, small: np.ndarray | None = None) -> Frame:
        frame = captured(image, self._index, self.name, small)
        self._index += 1
        return frame


class NetworkSource(LiveSource):
    """An RTSP/HTTP stream through PyAV with open/read timeouts and a protocol whitelist."""

    def __init__(
        self,
        url: str,
        cfg: SourceConfig,
        on_status: StatusCallback | None = None,
        stop: threading.Event | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(url, cfg, on_status, stop, rng)
        self._url = url
        self._options = {
            "analyzeduration": str(ANALYZE_DURATION_US),
            "probesize": str(PROBE_SIZE),
            # Refuse file:, concat: and friends: a camera URL must not be able to read local files.
            "protocol_whitelist": ",".join(cfg.allowed_protocols),
        }
        if url.lower().startswith(("rtsp://", "rtsps://")):
            self._options["rtsp_transport"] = cfg.transport

    def _count_error(self, exc: Exception) -> None:
        self.decode_errors += 1
        log.debug("%s: undecodable packet: %s", self.name, describe(exc))

    def _images(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        cfg = self._cfg
        try:
            container = av.open(self._url, options=self._options, timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
        except av.error.ExitError:
            raise Outage(f"no answer within source.open_timeout_s={cfg.open_timeout_s}") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise Outage(f"cannot connect: {describe(exc)}") from None
        try:
            if not container.streams.video:
                raise Outage("the stream has no video track")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise Outage("no decoder for the stream's video codec")
            w, h = stream.codec_context.width, stream.codec_context.height
            if w * h > cfg.max_pixels:  # the decoder would refuse them anyway, less clearly
                raise Outage(f"frames of {w}x{h} exceed source.max_pixels={cfg.max_pixels}")
            rate = stream.average_rate or stream.guessed_rate
            self._fps = float(rate) if rate and float(rate) > 0 else None
            configure_decoder(stream, cfg, threaded=False)
            frames = decode_video(container, stream, self._count_error, max_frame_gap_s=cfg.read_timeout_s)
            for vframe in frames:
                # Each frame's own size: resolution may change mid-session while the codec
                # context still reports the old one. PTS is ignored: it restarts on reconnect.
                if self._admit():
                    yield vframe.to_ndarray(format="bgr24"), analysis_image(vframe, self.analysis_size)
        except (av.error.ExitError, Stalled):
            # PyAV's read timeout fires the interrupt callback, which FFmpeg reports as "exit".
            raise Outage(f"stalled: no data for source.read_timeout_s={cfg.read_timeout_s}") from None
        except DamagedStream as exc:
            raise Outage(str(exc)) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise Outage(f"stream error: {describe(exc)}") from None
        finally:
            _close_quietly(container, self.name)


class CameraSource(LiveSource):
    """A USB/V4L2 camera through OpenCV, reopened when it fails (unplugged, busy, glitched)."""

    def __init__(
        self,
        device: int | str,
        cfg: SourceConfig,
        on_status: StatusCallback | None = None,
        stop: threading.Event | None = None,
        *,
        rng: random.Random | None = None,
        capture_factory: Callable[..., Any] = cv2.VideoCapture,
    ) -> None:
        super().__init__(f"camera:{device}" if isinstance(device, int) else device, cfg, on_status, stop, rng)
        self._device = device
        self._factory = capture_factory

    def _images(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        cap = self._factory(self._device)
        try:
            if not cap.isOpened():
                raise Outage("camera did not open (unplugged, busy, or no permission?)")
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._fps = fps if 0 < fps < 1000 else None
            while True:
                ok, image = cap.read()
                if not ok or image is None:
                    raise Outage("camera returned no frame")
                if self._admit():  # OpenCV gives BGR at full size only: the segmenter scales it
                    yield _as_bgr(np.asarray(image)), None
        finally:
            cap.release()


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise Outage(f"camera delivered {image.dtype} pixels; expected uint8")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _close_quietly(container: Any, name: str) -> None:
    try:
        container.close()
    except (av.error.FFmpegError, OSError) as exc:
        log.debug("%s: error while closing: %s", name, describe(exc))
