"""Source stage without network: real video files made with PyAV, damaged files, the one-slot buffer,
cameras (a fake capture and OpenCV reading a file), backoff and URL redaction."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.config import SourceConfig, load_config
from stream.config import replace as config_replace
from stream.sources.base import RateCap
from stream.sources.file import (
    CameraSource,
    FileSource,
    NetworkSource,
    Source,
    SourceError,
    open_source,
    redact,
)
from stream.sources.network import backoff_delay
from stream.types import Frame

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N_FRAMES = 64
W, H = 160, 120
BLUE = (255, 0, 0)  # BGR


@pytest.fixture(scope="module")
def cfg() -> SourceConfig:
    return load_config().source


def _images(n: int, w: int, h: int) -> Iterator[np.ndarray]:
    """A blue background with a yellow square moving right: every frame differs (GIF keeps them all)."""
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = BLUE
        x = (i * 3) % (w - 16)
        img[20:36, x : x + 16] = (0, 255, 255)
        yield img


def make_video(
    path: Path,
    codec: str,
    *,
    n: int = N_FRAMES,
    size: tuple[int, int] = (W, H),
    fps: int = 25,
    fmt: str | None = None,
    pix_fmt: str | None = None,
    faststart: bool = False,
) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        if pix_fmt:
            stream.pix_fmt = pix_fmt
        for img in _images(n, *size):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    vids = {
        "mp4": make_video(d / "a.mp4", "libx264"),
        "mkv": make_video(d / "a.mkv", "libx264"),
        # moov before mdat: damage in the middle hits the media, not the index.
        "faststart": make_video(d / "faststart.mp4", "libx264", faststart=True),
        "avi": make_video(d / "a.avi", "mjpeg", pix_fmt="yuvj420p"),
        "gif": make_video(d / "a.gif", "gif", pix_fmt="rgb8"),
        "slow": make_video(d / "slow.mp4", "libx264", n=8, fps=2),
        "fast": make_video(d / "fast.mp4", "libx264", n=16, fps=40),
    }
    # MPEG-TS segments can be concatenated byte-wise: the decoder meets a new SPS mid-stream.
    seg1 = make_video(d / "s1.ts", "libx264", n=20, size=(160, 120), fmt="mpegts")
    seg2 = make_video(d / "s2.ts", "libx264", n=20, size=(96, 64), fmt="mpegts")
    vids["resize"] = d / "resize.ts"
    vids["resize"].write_bytes(seg1.read_bytes() + seg2.read_bytes())
    return vids


def read_all(src: Source, limit_s: float = 20.0) -> list[Frame]:
    frames = []
    deadline = time.monotonic() + limit_s
    while (f := src.read()) is not None:
        frames.append(f)
        assert time.monotonic() < deadline, "reading did not end in time"
    return frames


# --- specs, errors, redaction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty source spec"),
        ("   ", "empty source spec"),
        ("/nonexistent/video.mp4", "video file not found"),
        ("ftp://cam.local/stream", "unsupported scheme 'ftp://'"),
        ("file:///etc/passwd", "unsupported scheme 'file://'"),
        ("concat://a.mp4|b.mp4", "unsupported scheme 'concat://'"),
    ],
)
def test_bad_spec_raises_one_clear_line(spec: str, message: str, cfg: SourceConfig) -> None:
    with pytest.raises(SourceError, match=message) as info:
        open_source(spec, cfg)
    assert "\n" not in str(info.value)


def test_scheme_not_in_allowed_protocols(cfg: SourceConfig) -> None:
    only_http = config_replace(cfg, allowed_protocols=("tcp", "http"))
    with pytest.raises(SourceError, match="allowed_protocols") as info:
        open_source("rtsp://admin:hunter2@10.0.0.5/live", only_http)
    assert "hunter2" not in str(info.value)
    assert "rtsp://***@10.0.0.5/live" in str(info.value)


def test_directory_is_not_a_video(tmp_path: Path, cfg: SourceConfig) -> None:
    with pytest.raises(SourceError, match="not a file"):
        open_source(str(tmp_path), cfg)


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("0", CameraSource, "camera:0"),
        ("/dev/video7", CameraSource, "/dev/video7"),
        ("rtsp://u:p@127.0.0.1:9/x", NetworkSource, "rtsp://***@127.0.0.1:9/x"),
        ("http://127.0.0.1:9/cam.mjpg", NetworkSource, "http://127.0.0.1:9/cam.mjpg"),
    ],
)
def test_live_specs_open_without_connecting(spec: str, kind: type, name: str, cfg: SourceConfig) -> None:
    src = open_source(spec, cfg)
    try:
        assert isinstance(src, kind)
        assert src.properties.is_live
        assert src.properties.name == name
    finally:
        src.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("/videos/a.mp4", "/videos/a.mp4"),
        ("rtsp://cam/stream", "rtsp://cam/stream"),
        ("rtsp://user:pass@cam:554/stream", "rtsp://***@cam:554/stream"),
        ("rtsp://user@cam/stream", "rtsp://***@cam/stream"),
        ("rtsps://admin:p%40ss@cam/s", "rtsps://***@cam/s"),
        ("rtsp://admin:p@ss@cam/s", "rtsp://***@cam/s"),  # unescaped "@" in the password
        ("rtsp://cam/path@with-at", "rtsp://cam/path@with-at"),
        ("http://cam/snap?user=a&password=s3cret&x=1", "http://cam/snap?user=a&password=***&x=1"),
        ("HTTPS://cam/v?token=abc", "HTTPS://cam/v?token=***"),
        ("Server returned 401: 'rtsp://u:pw@h/x'", "Server returned 401: 'rtsp://***@h/x'"),
        ("a rtsp://u:1@h/x and http://v:2@g/y", "a rtsp://***@h/x and http://***@g/y"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# --- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "faststart", "mkv", "avi", "gif"])
def test_file_frames_flow(
    kind: str, videos: dict[str, Path], cfg: SourceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream")
    src = open_source(str(videos[kind]), cfg)
    assert isinstance(src, FileSource)
    assert not src.properties.is_live
    frames = read_all(src)
    assert src.read() is None  # stays ended
    assert len(frames) == N_FRAMES
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert all(f.size == (W, H) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.source == str(videos[kind]) for f in frames)
    t = np.array([f.t_capture for f in frames])
    assert np.all(np.diff(t) >= 0)
    assert abs(frames[0].utc_capture - time.time()) < 60
    # BGR order: the background was encoded blue.
    b, g, r = frames[0].image[5, 5].astype(int)
    assert b > 200 and g < 50 and r < 50
    # The square moved: consecutive frames differ.
    assert not np.array_equal(frames[0].image, frames[10].image)
    assert src.decode_errors == 0
    assert not caplog.records  # a sound file ends without warnings


def test_resolution_change_midstream(videos: dict[str, Path], cfg: SourceConfig) -> None:
    frames = read_all(open_source(str(videos["resize"]), cfg))
    assert [f.size for f in frames] == [(160, 120)] * 20 + [(96, 64)] * 20


def test_realtime_paces_at_file_fps(videos: dict[str, Path], cfg: SourceConfig) -> None:
    """16 frames at 40 fps span 15 * 25 ms = 0.375 s when paced, a few ms otherwise."""
    fast = read_all(open_source(str(videos["fast"]), cfg))
    paced = read_all(open_source(str(videos["fast"]), config_replace(cfg, realtime=True)))
    assert len(fast) == len(paced) == 16
    span_paced = paced[-1].t_capture - paced[0].t_capture
    span_fast = fast[-1].t_capture - fast[0].t_capture
    assert 0.33 <= span_paced <= 0.9, span_paced
    assert span_fast < 0.3, span_fast
    gaps = np.diff([f.t_capture for f in paced])
    assert np.median(gaps) == pytest.approx(0.025, abs=0.012)


def test_stop_interrupts_pacing(videos: dict[str, Path], cfg: SourceConfig) -> None:
    stop = threading.Event()
    src = open_source(str(videos["slow"]), config_replace(cfg, realtime=True), stop=stop)
    assert src.read() is not None
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert src.read() is None  # the next frame is due 0.5 s later; stop wins
    assert time.monotonic() - t0 < 0.4
    src.close()


def test_max_pixels_refuses_large_frames(videos: dict[str, Path], cfg: SourceConfig) -> None:
    with pytest.raises(SourceError, match=r"160x120 exceed source.max_pixels=1000"):
        open_source(str(videos["mp4"]), config_replace(cfg, max_pixels=1000))


def test_audio_only_file_has_no_video(tmp_path: Path, cfg: SourceConfig) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, 800), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(SourceError, match="no video stream"):
        open_source(str(path), cfg)


def _damage(kind: str, videos: dict[str, Path], tmp: Path) -> Path:
    rng = random.Random(7)
    if kind == "empty":
        data = b""
    elif kind == "random":
        data = rng.randbytes(64 * 1024)
    elif kind.startswith("truncated"):
        src = videos[kind.split("-")[1]].read_bytes()
        data = src[: len(src) * 6 // 10]
    else:  # bitflip-<ext>: flip bytes across the middle of the file, sparing the container header
        buf = bytearray(videos[kind.split("-")[1]].read_bytes())
        start = max(len(buf) // 8, buf.find(b"mdat") + 64)  # after an mp4's index when it comes first
        for _ in range(60):
            pos = rng.randrange(start, len(buf) * 7 // 8)
            buf[pos] ^= 0xFF
        data = bytes(buf)
    ext = videos[kind.split("-")[1]].suffix if "-" in kind else ".mp4"
    path = tmp / f"{kind}{ext}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "random",
        "truncated-mp4",
        "truncated-mkv",
        "truncated-resize",
        "bitflip-mp4",
        "bitflip-faststart",
        "bitflip-mkv",
        "bitflip-avi",
    ],
)
def test_damaged_file_fails_cleanly(
    kind: str, videos: dict[str, Path], tmp_path: Path, cfg: SourceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Either one clear SourceError at open, or frames up to the damage and then a clean end."""
    path = _damage(kind, videos, tmp_path)
    caplog.set_level(logging.DEBUG, logger="stream")
    t0 = time.monotonic()
    try:
        src = open_source(str(path), cfg)
    except SourceError as exc:
        assert "\n" not in str(exc)
        assert str(path) in str(exc)
        return
    frames = read_all(src, limit_s=10.0)
    assert time.monotonic() - t0 < 10.0
    assert len(frames) <= N_FRAMES + 20
    assert all(f.image.ndim == 3 for f in frames)
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    if src.decode_errors:
        assert any(r.levelno == logging.WARNING and "could not be decoded" in r.getMessage() for r in caplog.records)


def test_truncated_mkv_keeps_frames_before_the_damage_and_warns(
    videos: dict[str, Path], tmp_path: Path, cfg: SourceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream")
    frames = read_all(open_source(str(_damage("truncated-mkv", videos, tmp_path)), cfg))
    assert 10 <= len(frames) < N_FRAMES
    assert [f.index for f in frames] == list(range(len(frames)))
    assert any("truncated file?" in r.getMessage() for r in caplog.records)


def test_corrupt_packets_are_counted_and_decoding_goes_on(
    videos: dict[str, Path], tmp_path: Path, cfg: SourceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream")
    src = open_source(str(_damage("bitflip-faststart", videos, tmp_path)), cfg)
    frames = read_all(src)
    assert src.decode_errors > 0
    assert len(frames) > N_FRAMES // 2  # frames after the bad packets still came out
    assert any("could not be decoded" in r.getMessage() for r in caplog.records)


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "count", "size"),
    [("car-detection.mp4", 377, (768, 432)), ("store-aisle-detection.gif", None, (480, 270))],
)
def test_shared_clips(name: str, count: int | None, size: tuple[int, int], cfg: SourceConfig) -> None:
    path = DATA / "clips" / name
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    frames = read_all(open_source(str(path), cfg), limit_s=60)
    assert len(frames) == count if count is not None else len(frames) > 10
    assert {f.size for f in frames} == {size}


# --- live-source machinery without a network: backoff and cameras -------------------------------


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [
        (1, 0.0, 0.25),
        (2, 0.0, 0.5),
        (3, 0.0, 1.0),
        (4, 0.0, 2.0),
        (9, 0.0, 2.0),
        (500, 0.0, 2.0),
        (1, 1.0, 0.3),
        (1, -1.0, 0.2),
        (9, 1.0, 2.4),
        (9, -1.0, 1.6),
    ],
)
def test_backoff_delay(attempt: int, u: float, expected: float, cfg: SourceConfig) -> None:
    assert backoff_delay(attempt, cfg, u) == pytest.approx(expected)


class FakeCapture:
    """cv2.VideoCapture stand-in following a script shared by every instance: "x" = does not open,
    an int n = opens and delivers n frames then fails."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.released = 0

    def __call__(self, device: int | str) -> FakeCapture:
        self.plan = self.script.pop(0) if self.script else 0
        self.left = self.plan if isinstance(self.plan, int) else 0
        return self

    def isOpened(self) -> bool:
        return self.plan != "x"

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((6, 8), 128, np.uint8)  # grey: must come out as BGR

    def release(self) -> None:
        self.released += 1

    def get(self, prop: int) -> float:
        return 15.0 if prop == cv2.CAP_PROP_FPS else 0.0


def test_camera_retries_and_reports_status(cfg: SourceConfig) -> None:
    quick = config_replace(cfg, backoff_initial_s=0.01, backoff_max_s=0.02)
    fake = FakeCapture(["x", "x", 3, 2])
    events: list[tuple[str, dict]] = []
    src = CameraSource(0, quick, on_status=lambda s: events.append((s.type, s.detail)), capture_factory=fake)
    frames = [src.read() for _ in range(5)]
    src.close()
    assert all(f is not None and f.size == (8, 6) and f.image.shape == (6, 8, 3) for f in frames)
    assert [f.index for f in frames if f] == [0, 1, 2, 3, 4]
    assert [k for k, _ in events] == ["source.offline", "source.online", "source.offline", "source.online"]
    assert events[0][1]["attempt"] == 1 and "did not open" in events[0][1]["reason"]
    assert events[1][1] == {"width": 8, "height": 6, "reconnects": 0}
    assert events[3][1]["reconnects"] == 1 and src.reconnects == 1
    assert (src.properties.width, src.properties.height, src.properties.fps) == (8, 6, 15.0)
    assert fake.released >= 3


def test_camera_via_opencv_on_a_file_reconnects_at_its_end(videos: dict[str, Path], cfg: SourceConfig) -> None:
    """Real OpenCV capture: a file "camera" ends like an unplugged one and is reopened."""
    quick = config_replace(cfg, backoff_initial_s=0.01, backoff_max_s=0.02)
    events: list[str] = []
    src = CameraSource(str(videos["mp4"]), quick, on_status=lambda s: events.append(s.type))
    frames = [src.read() for _ in range(N_FRAMES + 5)]
    src.close()
    assert all(f is not None and f.size == (W, H) for f in frames)
    assert events == ["source.online", "source.offline", "source.online"]
    assert src.reconnects == 1


def test_stop_ends_a_camera_that_never_opens(cfg: SourceConfig) -> None:
    stop = threading.Event()
    src = CameraSource(0, cfg, stop=stop, capture_factory=FakeCapture(["x"] * 1000))
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert src.read() is None
    assert time.monotonic() - t0 < 1.2
    src.close()


# ---------------------------------------------------------------- source.max_fps


@pytest.mark.parametrize(
    ("max_fps", "times", "kept"),
    [
        (0.0, [0.0, 0.001, 0.002], [0, 1, 2]),  # off: every frame
        (15.0, [i / 30 for i in range(8)], [0, 2, 4, 6]),  # 30 -> 15 fps: every other frame
        (10.0, [i / 30 for i in range(10)], [0, 3, 6, 9]),  # 30 -> 10 fps: one in three
        (30.0, [i / 25 for i in range(5)], [0, 1, 2, 3, 4]),  # under the cap: all kept
        (15.0, [0.0, 0.06, 0.13, 0.2], [0, 1, 2, 3]),  # jitter: a frame a little early is still kept
        (10.0, [0.0, 5.0, 5.01, 5.1], [0, 1, 3]),  # after a gap the schedule restarts
    ],
)
def test_rate_cap(max_fps: float, times: list[float], kept: list[int]) -> None:
    cap = RateCap(max_fps)
    assert [i for i, t in enumerate(times) if cap.admit(t)] == kept


@pytest.mark.parametrize("realtime", [False, True])
def test_file_max_fps_skips_frames_at_the_source(videos: dict[str, Path], cfg: SourceConfig, realtime: bool) -> None:
    """16 frames at 40 fps capped at 20: every other frame is kept, by media time, paced or not;
    the skipped ones are counted and leave gaps in the index."""
    src = open_source(str(videos["fast"]), config_replace(cfg, max_fps=20.0, realtime=realtime))
    frames = read_all(src)
    assert [f.index for f in frames] == list(range(0, 16, 2))
    assert src.frames_skipped == 8
    if realtime:  # paced at the kept frames' own times: 7 gaps of 50 ms
        span = frames[-1].t_capture - frames[0].t_capture
        assert 0.3 <= span <= 0.9, span


def test_camera_max_fps_skips_by_arrival_time(cfg: SourceConfig) -> None:
    """A fake camera that delivers frames as fast as it is read, capped at 20 fps: consecutive frames
    come about 50 ms apart and the ones in between are counted as skipped."""
    src = CameraSource(0, config_replace(cfg, max_fps=20.0), capture_factory=FakeCapture([10**7]))
    frames = [src.read() for _ in range(4)]
    src.close()
    assert all(f is not None for f in frames)
    gaps = np.diff([f.t_capture for f in frames if f is not None])
    assert gaps.min() >= 0.035, gaps
    assert src.frames_skipped > 0 and frames[-1] is not None and frames[-1].index > 3


def test_analysis_size_scales_larger_frames_as_they_are_decoded(videos: dict[str, Path], cfg: SourceConfig) -> None:
    """The decoder's scaler hands each frame larger than analysis_size also at that size, close to
    OpenCV's area resize of the full frame (what the segmenter would do); smaller frames get none."""
    src = open_source(str(videos["mp4"]), cfg)
    src.analysis_size = (80, 60)
    frames = read_all(src)
    assert frames and all(f.analysis is not None and f.analysis.shape == (60, 80, 3) for f in frames)
    ref = cv2.resize(frames[3].image, (80, 60), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(frames[3].analysis.astype(int) - ref).mean() < 6  # type: ignore[union-attr]
    big = open_source(str(videos["mp4"]), cfg)
    big.analysis_size = (W * 2, H * 2)
    assert all(f.analysis is None for f in read_all(big))
