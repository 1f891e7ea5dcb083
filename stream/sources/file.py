"""Video sources: files, network streams and cameras behind one blocking ``read()``.

``open_source(spec, cfg)`` picks the kind from the spec: an ``rtsp://``/``rtsps://``/``http(s)://``
URL is a network stream, an integer or ``/dev/videoN`` is a camera, anything else a video file.
Files end; live sources (network, camera) never end by themselves: an outage is reported through
``on_status`` and retried forever with capped, jittered backoff until ``stop`` is set.

Live sources live in ``stream.sources.network``, the shared interface in ``stream.sources.base``; this
module holds the file reader and ``open_source``. The one-slot hand-off that keeps capture from
queueing stale frames belongs to the runtime (``stream.runtime``), which owns every thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import av
import av.error

from stream.config import SourceConfig
from stream.sources.base import (
    DamagedStream,
    RateCap,
    Source,
    SourceError,
    SourceProperties,
    StatusCallback,
    analysis_image,
    captured,
    configure_decoder,
    decode_video,
    describe,
    redact,
)
from stream.sources.network import CameraSource, NetworkSource
from stream.types import Frame

__all__ = [
    "CameraSource",
    "FileSource",
    "NetworkSource",
    "Source",
    "SourceError",
    "open_source",
    "redact",
]

log = logging.getLogger(__name__)

# URL schemes a spec may use; each must also be listed in source.allowed_protocols.
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
# A PTS step longer than this is a discontinuity (wrap, splice), not a frame duration.
MAX_FRAME_STEP_S = 10.0
# A realtime file that has fallen this far behind its schedule (slow consumer) re-anchors instead of
# bursting frames to catch up, as a camera would.
MAX_PACING_LAG_S = 0.5

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CAMERA = re.compile(r"^(\d+|/dev/video\d+)$")


class FileSource(Source):
    """Decodes a video file with PyAV, as fast as possible or paced at its own frame rate.

    With ``source.max_fps``, frames above the cap (by media time, so a paced and an offline read keep
    the same frames) are skipped before their pixels are converted; ``index`` keeps counting them.
    """

    def __init__(self, path: Path, cfg: SourceConfig, stop: threading.Event | None = None) -> None:
        self.name = str(path)
        self.decode_errors = 0
        self.reconnects = 0
        self._cfg = cfg
        self._stop = stop if stop is not None else threading.Event()
        self._index = 0  # frames decoded so far, skipped ones included
        self._media_s = 0.0  # media time of the newest decoded frame since the first
        self._cap = RateCap(cfg.max_fps)
        self.frames_skipped = 0
        self._closed = False
        self._due: float | None = None  # monotonic time the next paced frame is due
        self._prev_pts_s: float | None = None
        self._span_s = 0.0  # media time decoded so far, to notice a truncated file
        hint = "expected a video file FFmpeg can read (mp4, mkv, avi, gif, ...)"
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot open {path}: {describe(exc)}; {hint}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{path} has no video stream; {hint}")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._nominal_step = 1.0 / float(rate) if rate and float(rate) > 0 else 1.0 / 25.0
        try:
            configure_decoder(self._stream, cfg, threaded=True)
        except SourceError as exc:
            self._container.close()
            raise SourceError(f"{path}: {exc}") from None
        cc = self._stream.codec_context
        w, h = cc.width, cc.height  # from the container headers; 0 when unknown until decoding
        try:
            cc.open(strict=False)  # surface a refused size or missing decoder now, not mid-run
        except av.error.FFmpegError as exc:
            self._container.close()
            if w * h > cfg.max_pixels:
                raise SourceError(
                    f"{path}: frames of {w}x{h} exceed source.max_pixels={cfg.max_pixels}; "
                    "raise source.max_pixels to accept them"
                ) from None
            raise SourceError(f"{path}: cannot open the {cc.name} decoder: {describe(exc)}") from None
        self._frames = decode_video(self._container, self._stream, self._count_error)
        self._properties = SourceProperties(
            name=self.name,
            is_live=False,
            realtime=cfg.realtime,
            fps=1.0 / self._nominal_step,
            width=cc.width or None,
            height=cc.height or None,
        )
        log.debug("opened %s (%s, %dx%d)", self.name, cc.name, cc.width, cc.height)

    @property
    def properties(self) -> SourceProperties:
        return self._properties

    def _count_error(self, exc: Exception) -> None:
        self.decode_errors += 1
        log.debug("%s: undecodable packet: %s", self.name, describe(exc))

    def read(self) -> Frame | None:
        if self._closed or self._stop.is_set():
            return None
        step = 0.0  # media time since the previous frame returned
        while True:
            try:
                vframe = next(self._frames, None)
            except (av.error.FFmpegError, DamagedStream) as exc:
                log.warning("%s: stopped reading at frame %d: %s", self.name, self._index, describe(exc))
                vframe = None
            if vframe is None:
                self._finish()
                return None
            dt = self._step(vframe.time)
            self._span_s += dt
            self._media_s += dt
            step += dt
            if self._cap.admit(self._media_s):
                break
            self.frames_skipped += 1
            self._index += 1
        image = vframe.to_ndarray(format="bgr24")
        small = analysis_image(vframe, self.analysis_size)
        if self._cfg.realtime and not self._pace(step):
            return None
        frame = captured(image, self._index, self.name, small)
        self._index += 1
        return frame

    def _step(self, pts_s: float | None) -> float:
        """Seconds between the previous frame and this one (0 for the first): the PTS difference
        when plausible, else the nominal frame duration (PTS may be missing, repeat, restart or jump)."""
        if self._index == 0:
            step = 0.0
        else:
            step = self._nominal_step
            if pts_s is not None and self._prev_pts_s is not None:
                delta = pts_s - self._prev_pts_s
                if 0.0 < delta <= MAX_FRAME_STEP_S:
                    step = delta
        if pts_s is not None:
            self._prev_pts_s = pts_s
        return step

    def _pace(self, step: float) -> bool:
        """Wait until this frame is due, ``step`` after the previous one; False when ``stop`` was
        set meanwhile."""
        now = time.monotonic()
        self._due = now if self._due is None else self._due + step
        if self._due < now - MAX_PACING_LAG_S:
            self._due = now
        wait = self._due - now
        return not (wait > 0 and self._stop.wait(wait))

    def _finish(self) -> None:
        if not self._closed:
            if self.decode_errors:
                log.warning(
                    "%s: ended after %d frames; %d packets could not be decoded (damaged file?)",
                    self.name,
                    self._index,
                    self.decode_errors,
                )
            elif (short := self._shortfall()) is not None:
                log.warning(
                    "%s: ended after %d frames at %.1f s of a declared %.1f s (truncated file?)",
                    self.name,
                    self._index,
                    *short,
                )
        self.close()

    def _shortfall(self) -> tuple[float, float] | None:
        """(seconds decoded, seconds declared) when the file ended well before its header said.

        FFmpeg ends quietly at a truncation; the header's duration is the only witness.
        """
        stream, container = self._stream, self._container
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:  # e.g. Matroska: only the segment has a duration
            declared = container.duration / av.time_base
        else:
            return None
        decoded = self._span_s + self._nominal_step
        if decoded < declared - max(1.0, 3 * self._nominal_step):
            return decoded, declared
        return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def _camera_device(spec: str) -> int | str | None:
    if not _CAMERA.match(spec):
        return None
    return int(spec) if spec.isdigit() else spec


def open_source(
    spec: str,
    cfg: SourceConfig,
    on_status: StatusCallback | None = None,
    stop: threading.Event | None = None,
) -> Source:
    """Open a video file, a network stream URL or a camera (index or /dev/videoN).

    Raises SourceError for a spec that can never work (missing file, unknown or disallowed scheme).
    Live sources do not connect here: they connect (and reconnect) on ``read()``, reporting
    ``source.offline`` / ``source.online`` through ``on_status``, which runs on the thread that
    calls ``read()``. Files report no status.
    """
    usage = "expected a video file path, an rtsp://, rtsps://, http(s):// URL or a camera index like 0"
    if not spec.strip():
        raise SourceError(f"empty source spec: {usage}")
    match = _SCHEME.match(spec)
    if match:
        scheme = match.group(1).lower()
        if scheme not in NETWORK_SCHEMES:
            raise SourceError(f"unsupported scheme '{scheme}://' in {redact(spec)}: {usage}")
        if scheme not in cfg.allowed_protocols:
            raise SourceError(
                f"scheme '{scheme}' of {redact(spec)} is not in source.allowed_protocols "
                f"({', '.join(cfg.allowed_protocols)}); add it there to allow it"
            )
        return NetworkSource(spec, cfg, on_status, stop)
    device = _camera_device(spec)
    if device is not None:
        return CameraSource(device, cfg, on_status, stop)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"video file not found: {spec} ({usage})")
    if not path.is_file():
        raise SourceError(f"not a file: {spec} ({usage})")
    return FileSource(path, cfg, stop)
