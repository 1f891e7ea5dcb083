"""Network source against a real RTSP server (gst-rtsp-server on loopback) and a fault-injecting proxy.

The server runs under the system interpreter (/usr/bin/python3, GStreamer from Debian packages:
.ci/install-rtsp.sh); every test here skips when that is not available. Timings measured here are
printed (run with -s to see them).
"""

from __future__ import annotations

import functools
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import SourceConfig, load_config
from stream.config import replace as config_replace
from stream.sources.base import SourceStatus
from stream.sources.file import Source, open_source
from stream.types import Frame
from tests.faultproxy import FaultProxy
from tests.live import PASSWORD, RTSP_MISSING, SECRETS, SIZE, RtspServer, wait_for
from tests.test_source import make_video

pytestmark = [pytest.mark.network, pytest.mark.skipif(RTSP_MISSING is not None, reason=RTSP_MISSING or "")]


class Reader:
    """Reads a source on a thread, recording frames and status events with monotonic times."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, Frame]] = []
        self.events: list[tuple[float, str, dict]] = []
        self.error: BaseException | None = None
        self.done_at: float | None = None
        self._thread: threading.Thread | None = None

    def status(self, status: SourceStatus) -> None:
        self.events.append((time.monotonic(), status.type, status.detail))

    def start(self, src: Source) -> Reader:
        def run() -> None:
            try:
                while (frame := src.read()) is not None:
                    self.frames.append((time.monotonic(), frame))
            except BaseException as exc:  # reported by the test
                self.error = exc
            self.done_at = time.monotonic()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.events]

    def first_after(self, t: float, kind: str) -> float | None:
        times = (
            [te for te, k, _ in self.events if te >= t and k == kind]
            if kind != "frame"
            else [tf for tf, _ in self.frames if tf >= t]
        )
        return times[0] if times else None


@pytest.fixture(scope="module")
def server() -> Iterator[RtspServer]:
    srv = RtspServer().start()
    yield srv
    srv.kill()


@pytest.fixture
def proxy(server: RtspServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", server.port)) as p:
        yield p


@pytest.fixture(scope="module")
def cfg() -> SourceConfig:
    # A short read timeout keeps stall tests quick; the rest are the shipped defaults.
    return config_replace(load_config().source, read_timeout_s=1.0, open_timeout_s=2.0)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_frames_flow(transport: str, server: RtspServer, cfg: SourceConfig) -> None:
    reader = Reader()
    src = open_source(server.url(), config_replace(cfg, transport=transport), on_status=reader.status)
    reader.start(src)
    try:
        assert wait_for(lambda: len(reader.frames) >= 25, 10.0), f"only {len(reader.frames)} frames"
    finally:
        src.close()
    frames = [f for _, f in reader.frames[:25]]
    assert reader.error is None
    assert src.properties.is_live and src.properties.name == f"rtsp://***@127.0.0.1:{server.port}/test"
    assert [f.index for f in frames] == list(range(25))
    assert all(f.size == SIZE and f.source == src.properties.name for f in frames)
    assert all(a.t_capture < b.t_capture for a, b in zip(frames, frames[1:], strict=False))
    # The frames buffered while FFmpeg probed the stream (analyzeduration, 0.5 s) come out in a burst;
    # after that, live pacing: 9 intervals at 15 fps take about 0.6 s.
    assert frames[24].t_capture - frames[15].t_capture > 0.4
    assert reader.events[0][1:] == ("source.online", {"width": 320, "height": 240, "reconnects": 0})
    assert reader.kinds() == ["source.online"]


@pytest.mark.slow
def test_server_restart_reports_outage_and_recovers(cfg: SourceConfig) -> None:
    """Kill the server (a clean EOF for the reader), keep it down 1.5 s, restart it on the same port."""
    srv = RtspServer().start()
    reader = Reader()
    src = open_source(srv.url(), cfg, on_status=reader.status)
    reader.start(src)
    detect, recover = [], []
    try:
        assert wait_for(lambda: len(reader.frames) >= 5, 8.0)
        for cycle in range(2):
            t_kill = time.monotonic()
            srv.kill()
            assert wait_for(functools.partial(reader.first_after, t_kill, "source.offline"), 5.0)
            detect.append(reader.first_after(t_kill, "source.offline") - t_kill)  # type: ignore[operator]
            time.sleep(1.5)
            srv.start()
            t_up = time.monotonic()
            assert wait_for(functools.partial(reader.first_after, t_up, "frame"), 8.0), f"cycle {cycle}"
            recover.append(reader.first_after(t_up, "frame") - t_up)  # type: ignore[operator]
    finally:
        src.close()
        srv.kill()
    print(
        f"\nserver kill -> source.offline: {[f'{d:.3f}' for d in detect]} s; "
        f"restart -> first frame: {[f'{r:.2f}' for r in recover]} s"
    )
    assert reader.error is None
    assert reader.kinds() == ["source.online"] + ["source.offline", "source.online"] * 2
    assert src.reconnects == 2
    assert [e[2]["reconnects"] for e in reader.events if e[1] == "source.online"] == [0, 1, 2]
    assert all(d <= 1.0 for d in detect), detect
    assert all(r <= 4.0 for r in recover), recover
    indices = [f.index for _, f in reader.frames]
    assert indices == list(range(len(indices)))  # counted across reconnects, never restarted


@pytest.mark.slow
def test_stall_is_detected_and_reconnected(proxy: FaultProxy, server: RtspServer, cfg: SourceConfig) -> None:
    reader = Reader()
    src = open_source(server.url(proxy.port), cfg, on_status=reader.status)
    reader.start(src)
    try:
        assert wait_for(lambda: len(reader.frames) >= 5, 8.0)
        t_stall = time.monotonic()
        proxy.set_mode("stall")
        assert wait_for(lambda: reader.first_after(t_stall, "source.offline"), cfg.read_timeout_s + 3)
        t_off = reader.first_after(t_stall, "source.offline")
        assert t_off is not None
        proxy.set_mode("pass")
        t_pass = time.monotonic()
        assert wait_for(lambda: reader.first_after(t_pass, "frame"), cfg.open_timeout_s + 6.0)
        t_back = reader.first_after(t_pass, "frame")
        assert t_back is not None
    finally:
        src.close()
    print(
        f"\nstall -> source.offline: {t_off - t_stall:.3f} s (read_timeout_s={cfg.read_timeout_s}); "
        f"proxy passing again -> first frame: {t_back - t_pass:.2f} s"
    )
    offline = [info for _, kind, info in reader.events if kind == "source.offline"]
    assert offline[0]["reason"].startswith("stalled") and offline[0]["attempt"] == 1
    assert t_off - t_stall <= cfg.read_timeout_s + 1.0
    assert src.reconnects == 1 and reader.error is None


@pytest.mark.slow
@pytest.mark.parametrize("when", ["blocked in a stalled read", "backing off between reconnects"])
def test_stop_returns_promptly(when: str, proxy: FaultProxy, server: RtspServer, cfg: SourceConfig) -> None:
    stop = threading.Event()
    reader = Reader()
    src = open_source(server.url(proxy.port), cfg, on_status=reader.status, stop=stop)
    reader.start(src)
    try:
        assert wait_for(lambda: len(reader.frames) >= 3, 8.0)
        if when.startswith("blocked"):
            proxy.set_mode("stall")
            time.sleep(0.3)  # inside FFmpeg's read now, well before the 1 s timeout
            assert "source.offline" not in reader.kinds()
        else:
            proxy.set_mode("refuse")
            assert wait_for(lambda: "source.offline" in reader.kinds(), 5.0)
            time.sleep(0.3)
        t_stop = time.monotonic()
        stop.set()
        reader.join(2.0)
        assert reader.done_at is not None, "read() did not return after stop"
        returned = reader.done_at - t_stop
        t_close = time.monotonic()
        src.close()
        closed = time.monotonic() - t_close
    finally:
        stop.set()
        src.close()
    print(f"\nstop while {when}: read() returned in {returned:.3f} s, close() took {closed:.3f} s")
    assert returned <= 1.0
    assert closed <= cfg.read_timeout_s + 0.5
    assert reader.error is None


@pytest.mark.slow
def test_credentials_never_appear(
    proxy: FaultProxy, server: RtspServer, cfg: SourceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Connect, lose the link, reconnect, and fail authentication: every log line, status reason and
    name is redacted, while still naming the (redacted) URL."""
    caplog.set_level(logging.DEBUG, logger="stream")
    good, bad = Reader(), Reader()
    src = open_source(server.url(proxy.port), cfg, on_status=good.status)
    wrong = open_source(server.url(password="not-" + PASSWORD), cfg, on_status=bad.status)
    good.start(src)
    bad.start(wrong)
    try:
        assert wait_for(lambda: len(good.frames) >= 3, 8.0)
        proxy.set_mode("cut")
        assert wait_for(lambda: "source.offline" in good.kinds(), 5.0)
        proxy.set_mode("pass")
        assert wait_for(lambda: good.kinds().count("source.online") == 2, 8.0)
        assert wait_for(lambda: "source.offline" in bad.kinds(), 8.0)
    finally:
        src.close()
        wrong.close()
    texts = [r.getMessage() for r in caplog.records]
    texts += [str(info) for r in (good, bad) for _, _, info in r.events]
    texts += [src.properties.name, wrong.properties.name] + [f.source for _, f in good.frames]
    leaks = [t for t in texts if any(s in t for s in SECRETS)]
    assert not leaks, leaks
    reason = bad.events[0][2]["reason"]
    assert "401" in reason and "rtsp://***@127.0.0.1" in reason, reason
    assert not bad.frames


@pytest.mark.slow
def test_corrupt_stream_keeps_delivering(proxy: FaultProxy, server: RtspServer, cfg: SourceConfig) -> None:
    """Bytes flipped in the media: the decoder conceals or the source counts errors / reconnects, but
    frames keep coming and nothing escapes read()."""
    reader = Reader()
    src = open_source(server.url(proxy.port), cfg, on_status=reader.status)
    reader.start(src)
    try:
        assert wait_for(lambda: len(reader.frames) >= 3, 8.0)
        proxy.corrupt_every = 1  # every chunk the server sends
        proxy.set_mode("corrupt")
        t0 = time.monotonic()
        assert wait_for(lambda: sum(1 for t, _ in reader.frames if t > t0) >= 20, 8.0)
    finally:
        src.close()
    print(f"\ncorrupt: {proxy.corrupted} bytes flipped, decode_errors={src.decode_errors} reconnects={src.reconnects}")
    assert proxy.corrupted >= 10
    assert reader.error is None
    assert all(f.size == SIZE for _, f in reader.frames)


def test_http_file_is_live_and_replays_after_its_end(tmp_path: Path, cfg: SourceConfig) -> None:
    """An http:// source goes through the same live machinery: its end is an outage, then it
    reconnects. (Skipped with the rest when GStreamer is missing, though it needs only Python.)"""
    make_video(tmp_path / "clip.mp4", "libx264", n=12)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    reader = Reader()
    quick = config_replace(cfg, backoff_initial_s=0.05)
    src = open_source(f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4", quick, on_status=reader.status)
    reader.start(src)
    try:
        assert wait_for(lambda: len(reader.frames) >= 20, 8.0)
    finally:
        src.close()
        httpd.shutdown()
        httpd.server_close()
    assert reader.kinds()[:3] == ["source.online", "source.offline", "source.online"]
    assert reader.events[1][2]["reason"] == "end of stream"
    assert [f.index for _, f in reader.frames[:20]] == list(range(20))


def test_oversized_stream_is_refused_with_a_clear_reason(server: RtspServer, cfg: SourceConfig) -> None:
    reader = Reader()
    small = config_replace(cfg, max_pixels=320 * 240 - 1)
    src = open_source(server.url(), small, on_status=reader.status)
    reader.start(src)
    try:
        assert wait_for(lambda: reader.events, 8.0)
    finally:
        src.close()
    assert reader.events[0][1:] == (
        "source.offline",
        {"reason": f"frames of 320x240 exceed source.max_pixels={320 * 240 - 1}", "attempt": 1},
    )
    assert not reader.frames
