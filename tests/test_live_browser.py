"""/live in a real headless Chromium: the picture is there and moves between two screenshots, and
the items and events the page lists are the lane's. First against the HTTP server fed by a thread
(seconds), then against a whole run of the product on a real clip with --http."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.config import load_config
from stream.events import EventFactory
from stream.outputs.http import HttpServer
from stream.outputs.lane import LaneState
from stream.outputs.live import LiveView
from stream.types import Detections, FrameResult, Label, TrackView
from tests.browser import BROWSER_MISSING, Browser
from tests.fakes import frame

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "clips" / "car-detection.mp4"
pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or ""),
]


def picture_changes(browser: Browser, wait_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two screenshots of the page's picture ``wait_s`` apart, cropped to the <img>."""
    browser.wait_for("const i = document.getElementById('picture'); return i.complete && i.naturalWidth > 0;")
    x1, y1, x2, y2 = browser.rect("#picture")
    first = browser.screenshot()[y1:y2, x1:x2]
    time.sleep(wait_s)
    second = browser.screenshot()[y1:y2, x1:x2]
    return first, second


def moving_frames(view: LiveView, stop: threading.Event) -> None:
    """30 fps of a square sliding across a grey counter, one labelled item."""
    label = Label("apple", 0.91, 0.2, (("apple", 0.91),), False, 3)
    events = EventFactory("run", "test")
    i = 0
    while not stop.is_set():
        img = np.full((240, 320, 3), 90, np.uint8)
        x = 10 + (i * 4) % 260
        cv2.rectangle(img, (x, 80), (x + 50, 130), (0, 200, 255), -1)
        views = (TrackView(7, (float(x), 80.0, x + 50.0, 130.0), 0, label),)
        view.write(img, FrameResult(frame(i, 320, 240), Detections.empty(), views, ()))
        if i % 30 == 0:
            view.publish(events.item("item.entered", frame(i), i // 30, (0, 0, 5, 5), None))
        i += 1
        time.sleep(1 / 30)


def test_live_page_shows_a_moving_picture_items_and_events(tmp_path):
    cfg = load_config().http
    view = LiveView(cfg)
    stop = threading.Event()
    feeder = threading.Thread(target=moving_frames, args=(view, stop), daemon=True)
    feeder.start()
    state = LaneState(cfg, view, lambda: {"frames_read": 1, "frames_processed": 1, "frames_dropped": 0})
    try:
        with HttpServer("127.0.0.1", 0, state) as server, Browser(tmp_path / "profile") as browser:
            browser.open(server.url + "/live")
            first, second = picture_changes(browser)
            assert first.shape[0] >= 200 and first.shape[1] >= 300, first.shape
            assert first.std() > 10, "the picture is blank"
            assert np.abs(first.astype(int) - second.astype(int)).mean() > 0.5, "the picture did not move"
            items = browser.wait_for("return document.getElementById('items').innerText;")
            assert "apple" in items and "0.91" in items
            assert "item.entered" in browser.wait_for("return document.getElementById('events').innerText;")
            assert browser.run("return document.getElementById('ready').textContent;") == "ready"
    finally:
        stop.set()
        feeder.join(2)


def _start_run(args: list[str], stderr_path: Path) -> tuple[subprocess.Popen, str]:
    err = stderr_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"HTTP on (http://\S+):", stderr_path.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the run never served HTTP:\n{stderr_path.read_text()[-2000:]}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.data
@pytest.mark.timeout(180)
@pytest.mark.skipif(not CLIP.is_file(), reason=f"{CLIP} is absent (../shared/data)")
def test_run_on_a_real_clip_serves_the_four_endpoints_and_a_moving_live_view(tmp_path):
    proc, url = _start_run(
        ["run", str(CLIP), "--realtime", "--no-display", "--http", "127.0.0.1:0", "--events", "jsonl:/dev/null"],
        tmp_path / "stderr.txt",
    )
    try:
        assert _get(url + "/healthz")[0] == 200
        deadline = time.monotonic() + 60
        while (ready := _get(url + "/readyz"))[0] != 200:
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        with Browser(tmp_path / "profile") as browser:
            browser.open(url + "/live")
            first, second = picture_changes(browser)
            assert first.std() > 10, "the picture is blank"
            assert np.abs(first.astype(int) - second.astype(int)).mean() > 0.5, "the picture did not move"
        state = json.loads(_get(url + "/api/state")[1])
        assert state["frame"]["width"] == 768 and state["counters"]["frames_processed"] > 0
        code, body = _get(url + "/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        processed = fams["checkout_stream_frames_processed"].samples[0]
        assert code == 200 and processed.labels["lane"] == "default" and processed.value > 0
        ages = [s for s in fams["checkout_stream_frame_age_seconds"].samples if s.name.endswith("_count")]
        assert ages[0].value > 0
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.data
@pytest.mark.timeout(180)
@pytest.mark.skipif(not CLIP.is_file(), reason=f"{CLIP} is absent (../shared/data)")
def test_post_basket_close_ends_the_open_basket_of_a_real_run(tmp_path):
    """The POS closes the basket over HTTP in the middle of a live-paced real clip: the run emits
    basket.closed with reason api and its receipt, and the next item opens a new basket."""
    events = tmp_path / "events.jsonl"
    proc, url = _start_run(
        ["run", str(CLIP), "--realtime", "--no-display", "--http", "127.0.0.1:0", "--events", f"jsonl:{events}"],
        tmp_path / "stderr.txt",
    )

    def read() -> list[dict]:
        return [json.loads(line) for line in events.read_text().splitlines() if line.endswith("}")]

    try:
        deadline = time.monotonic() + 60
        while not any(e["type"] == "basket.item_added" for e in read()):
            assert time.monotonic() < deadline and proc.poll() is None, "no basket opened"
            time.sleep(0.1)
        req = urllib.request.Request(url + "/api/basket/close", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
        assert r.status == 202 and answer["closing"]
        while not any(e["type"] == "basket.closed" for e in read()):
            assert time.monotonic() < deadline, "the basket never closed"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    closed = [e for e in read() if e["type"] == "basket.closed"]
    assert closed[0]["basket_id"] == answer["basket_id"] and closed[0]["reason"] == "api"
    assert closed[0]["receipt"]["items"] or closed[0]["receipt"]["unknown_items"]
