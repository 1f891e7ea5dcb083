"""What every video source shares: the Source interface with its frozen properties and typed status
updates, errors, URL redaction, the decode loop.

The file reader (``stream.sources.file``), the live sources (``stream.sources.network``) and the demo
(``stream.sources.demo``) all build on it without importing each other.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import av
import av.error
import numpy as np

from stream.config import SourceConfig
from stream.types import Frame


@dataclass(frozen=True)
class SourceProperties:
    """What the runtime needs to know of a source; read through ``Source.properties``.

    name: the source's name with credentials redacted.
    is_live: a camera or network stream (never ends by itself; outages are retried).
    realtime: frames arrive at their own pace (live, or a paced file), so stale ones are dropped;
        False: an offline file, read as fast as the pipeline takes frames, none dropped.
    fps: nominal frames per second; None while unknown (a live stream before it first connects).
    width, height: frame size in pixels; None while unknown. Frames carry their own size, which wins.
    """

    name: str
    is_live: bool
    realtime: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class SourceStatus:
    """A live source went offline (``detail``: reason, attempt) or came online (width, height,
    reconnects). Delivered on the thread that calls ``read()``, in order with the frames."""

    type: Literal["source.offline", "source.online"]
    detail: dict[str, Any] = field(default_factory=dict)


StatusCallback = Callable[[SourceStatus], None]

# Consecutive undecodable packets after which a stream counts as broken rather than glitched.
MAX_ERRORS_IN_ROW = 64

# userinfo: everything between "scheme://" and the last "@" before the path (passwords may hold "@").
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"]*@")
_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|token|auth|secret|key|sig|signature)=)[^&;\s'\"]*", re.IGNORECASE
)


class SourceError(RuntimeError):
    """A source spec cannot be opened: missing file, unknown scheme, not a video."""


def redact(text: str) -> str:
    """``text`` with URL credentials replaced: ``rtsp://user:pass@host`` -> ``rtsp://***@host``.

    Works on whole messages too (FFmpeg errors quote the URL), so every log line goes through it.
    """
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def captured(image: np.ndarray, index: int, source: str, analysis: np.ndarray | None = None) -> Frame:
    """The ``Frame`` a source hands out for ``image``, stamped with the capture clocks now
    (``time.monotonic()`` for ages, ``time.time()`` for the event's UTC)."""
    return Frame(
        image=image,
        index=index,
        t_capture=time.monotonic(),
        utc_capture=time.time(),
        source=source,
        analysis=analysis,
    )


class Source(abc.ABC):
    """A stream of Frames. ``read()`` blocks; None means the end (file over, ``stop`` set, closed).

    ``decode_errors`` and ``reconnects`` count undecodable packets and reconnections since opening;
    ``frames_skipped`` the frames dropped at the source to keep to ``source.max_fps``.

    ``analysis_size`` (width, height), set by the runtime before the first ``read()``: a source that
    decodes with FFmpeg also hands each larger frame scaled to that size (``Frame.analysis``, by the
    decoder's own scaler, straight from YUV), so the segmenter never resizes a 1080p frame itself.
    """

    decode_errors: int = 0
    reconnects: int = 0
    frames_skipped: int = 0
    analysis_size: tuple[int, int] | None = None

    @property
    @abc.abstractmethod
    def properties(self) -> SourceProperties:
        """A snapshot: a live source learns its size and rate when it connects."""

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RateCap:
    """Keeps a source at or under ``max_fps`` (0 = no cap): ``admit(t)`` says whether the frame at
    ``t`` seconds (media time for files, arrival time for live streams) is kept.

    Kept frames follow a schedule one period apart, so 30 fps capped at 15 keeps every other frame
    and the long-run rate never exceeds the cap; a frame up to a fifth of a period early still
    counts as on time (arrival jitter), and after a gap of more than a period the schedule restarts.
    """

    EARLY = 0.2  # share of a period a frame may be early and still be kept

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._due: float | None = None

    def admit(self, t: float) -> bool:
        if not self.period:
            return True
        if self._due is not None and t < self._due - self.EARLY * self.period:
            return False
        late = self._due is None or t - self._due > self.period
        self._due = (t if late else self._due) + self.period  # type: ignore[operator]
        return True


class DamagedStream(Exception):
    """Too many packets in a row could not be demuxed or decoded."""


class Stalled(Exception):
    """Packets may still trickle in, but no frame has been decoded for too long."""


def decode_video(
    container: Any,
    stream: Any,
    on_data_error: Callable[[Exception], None],
    max_frame_gap_s: float | None = None,
) -> Iterator[Any]:
    """Decoded ``av.VideoFrame``s of ``stream``.

    A packet that cannot be demuxed or decoded (``InvalidDataError``: a lost or corrupt packet) goes to
    ``on_data_error`` and decoding carries on with the next one; ``MAX_ERRORS_IN_ROW`` of them in a
    row raise DamagedStream. Any other FFmpeg error (stall, reset) propagates: the caller decides
    whether that ends a file or is an outage of a live stream.

    ``max_frame_gap_s``: once frames have flowed, raise Stalled when a packet arrives this long after
    the last decoded frame. PyAV's read timeout alone is not enough: over RTSP/TCP its first expiry
    returns a bogus packet (which restarts its clock) and only the second raises, doubling the time
    to notice a hung link. Not armed before the first frame: a camera with a long GOP sends nothing
    decodable until its next keyframe.
    """
    in_row = 0
    last_frame: float | None = None
    while True:
        try:
            # A fresh demux iterator after a demux error resumes at the next packet.
            for packet in container.demux(stream):
                if max_frame_gap_s is not None and last_frame is not None:
                    gap = time.monotonic() - last_frame
                    if gap >= max_frame_gap_s:
                        raise Stalled(f"no frame for {gap:.1f} s")
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as exc:
                    on_data_error(exc)
                    in_row += 1
                    if in_row >= MAX_ERRORS_IN_ROW:
                        raise DamagedStream(f"{in_row} packets in a row could not be decoded") from None
                    continue
                in_row = 0
                if frames:
                    last_frame = time.monotonic()
                yield from frames
            return
        except av.error.InvalidDataError as exc:  # raised by demux itself
            on_data_error(exc)
            in_row += 1
            if in_row >= MAX_ERRORS_IN_ROW:
                raise DamagedStream(f"{in_row} packets in a row could not be read") from None


def analysis_image(vframe: Any, size: tuple[int, int] | None) -> np.ndarray | None:
    """``vframe`` (an ``av.VideoFrame``) scaled down to ``size`` (w, h) as BGR by FFmpeg's scaler
    (area averaging, like the segmenter's own resize), or None when it is no larger than ``size``."""
    if size is None or (vframe.width <= size[0] and vframe.height <= size[1]):
        return None
    small: np.ndarray = vframe.reformat(
        width=size[0], height=size[1], format="bgr24", interpolation="AREA"
    ).to_ndarray()
    return small


def describe(exc: BaseException) -> str:
    """One redacted line for an exception (FFmpeg messages include the URL)."""
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0])


def configure_decoder(stream: Any, cfg: SourceConfig, threaded: bool) -> None:
    """Pixel-count guard (a tiny file can declare 8K frames and eat GBs) and threading.

    Must run before the codec opens. Frame threading adds one frame of latency per thread, so live
    sources keep FFmpeg's default (slice threading) and files use AUTO for throughput.
    """
    if stream.codec_context is None:  # e.g. a damaged header naming a codec FFmpeg has no decoder for
        raise SourceError(
            f"no decoder for its video stream (codec id {getattr(stream, 'codec_tag', '?')!s}): "
            "damaged file or unsupported codec"
        )
    if threaded:
        stream.thread_type = "AUTO"
    stream.codec_context.options = {"max_pixels": str(cfg.max_pixels)}
