"""The operations HTTP server on a real loopback socket, with a real LiveView fed real FrameResults:
routes and their status codes, readiness reasons, the token, the request cap and slow-client drop,
the JPEG rate cap, and /metrics read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from stream.cli import main as cli_main
from stream.config import ConfigError, HttpConfig, load_config, replace
from stream.events import EventFactory
from stream.outputs.http import HttpServer, parse_bind
from stream.outputs.lane import LaneHttp, LaneState, lane_identity
from stream.outputs.live import LiveView
from stream.outputs.metrics import METRICS, PREFIX
from stream.sinks import MemorySink, SinkSet
from stream.stats import RunStats
from stream.types import Detections, FrameResult, Label, StageTimes, TrackView
from tests.fakes import frame

pytestmark = pytest.mark.network


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def http_cfg(**changes: Any) -> HttpConfig:
    return replace(load_config().http, **changes)


def result(index: int, labelled: bool = True) -> FrameResult:
    label = Label("apple", 0.91, 0.2, (("apple", 0.91), ("pear", 0.71)), False, 3) if labelled else None
    views = (TrackView(7, (10.0, 20.0, 60.0, 80.0), 0, label), TrackView(8, (70.0, 20.0, 90.0, 50.0), -1, None))
    return FrameResult(frame(index), Detections.empty(), views, (), StageTimes(segment=4.0, boxes=1.0))


def image(index: int, w: int = 160, h: int = 120) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.putText(img, str(index), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
    return img


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class SpoolingSink:
    """Reports what the MQTT and webhook sinks report (a spool and acknowledged deliveries)."""

    def publish(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"published": 9, "delivered": 6, "spooled": 3, "dropped": 0}


class Lane:
    """A LiveView + LaneState + HttpServer on 127.0.0.1:0 with fake counters and real sinks."""

    def __init__(self, token: str = "", lane: str = "default", **cfg: Any) -> None:
        self.clock = Clock()
        self.cfg = http_cfg(**cfg)
        self.view = LiveView(self.cfg, clock=self.clock)
        self.sinks = SinkSet([MemorySink(), SpoolingSink(), self.view])
        self.counters = {"frames_read": 12, "frames_processed": 10, "frames_dropped": 2}
        self.models_loaded = True
        identity = {
            "models": {"segmenter": {"name": "unet", "version": "3", "sha256": "ab" * 32, "provider": "cpu"}},
            "catalog": {"products": 5, "vectors": 40, "index": "flat"},
        }
        self.state = LaneState(
            self.cfg,
            self.view,
            lambda: self.counters,
            sinks=self.sinks.stats,
            models_loaded=lambda: self.models_loaded,
            identity=identity,
            lane=lane,
        )
        self.server = HttpServer(
            "127.0.0.1",
            0,
            self.state,
            token=token,
            max_clients=self.cfg.max_clients,
            client_timeout_s=self.cfg.client_timeout_s,
        ).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def lane():
    ln = Lane()
    yield ln
    ln.close()


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("", None),
        ("8080", ("127.0.0.1", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:80", ("localhost", 80)),
        (":8080", None),
        ("::1", None),
        ("host:port", None),
        ("host:70000", None),
    ],
)
def test_parse_bind(spec, want):
    if want is None:
        with pytest.raises(ConfigError, match="bad HTTP bind"):
            parse_bind(spec)
    else:
        assert parse_bind(spec) == want


def test_non_loopback_bind_needs_the_token():
    view = LiveView(http_cfg())
    state = LaneState(http_cfg(), view, dict)
    with pytest.raises(ConfigError, match=r"events\.token"):
        HttpServer("0.0.0.0", 0, state)
    HttpServer("0.0.0.0", 0, state, token="s3cret").close()


def test_healthz_and_readyz_reasons(lane):
    code, _, body = get(lane.url + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "alive"
    code, _, body = get(lane.url + "/readyz")
    doc = json.loads(body)
    assert code == 503 and doc["ready"] is False and doc["reasons"] == ["no frame read yet"]

    lane.view.write(image(0), result(0))
    code, _, body = get(lane.url + "/readyz")
    assert code == 200, body
    assert json.loads(body)["checks"] == {
        "models_loaded": True,
        "source_online": True,
        "frames_flowing": True,
        "running": True,
    }

    lane.clock.t += lane.cfg.ready_frames_s + 1
    code, _, body = get(lane.url + "/readyz")
    assert code == 503 and "no frame processed for" in json.loads(body)["reasons"][0]

    lane.view.write(image(1), result(1))
    lane.sinks.publish(EventFactory("r", "cam").status("source.offline", {"reason": "eof", "attempt": 1}))
    lane.models_loaded = False
    code, _, body = get(lane.url + "/readyz")
    assert code == 503
    assert json.loads(body)["reasons"] == ["models are still loading", "the source is offline (reconnecting)"]


def test_frame_jpeg_is_encoded_on_demand_and_rate_capped(lane):
    code, _, _ = get(lane.url + "/api/frame.jpg")
    assert code == 503
    for i in range(50):  # the loop's side never encodes
        lane.view.write(image(i), result(i))
    assert lane.view.encoded == 0
    code, headers, body = get(lane.url + "/api/frame.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and headers["X-Frame-Index"] == "49"
    decoded = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (120, 160, 3)
    lane.view.write(image(50), result(50))
    code, headers, again = get(lane.url + "/api/frame.jpg")  # within 1/live_fps: the cached picture
    assert headers["X-Frame-Index"] == "49" and again == body and lane.view.encoded == 1
    lane.clock.t += 1.5 / lane.cfg.live_fps
    _, headers, _ = get(lane.url + "/api/frame.jpg")
    assert headers["X-Frame-Index"] == "50" and lane.view.encoded == 2


def test_wide_frames_are_scaled_to_live_max_width():
    ln = Lane(live_max_width=64)
    try:
        ln.view.write(image(0, w=320, h=240), result(0))
        _, _, body = get(ln.url + "/api/frame.jpg")
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    finally:
        ln.close()


def test_api_state_items_and_last_events_newest_first(lane):
    code, _, body = get(lane.url + "/api/state")
    assert code == 200 and json.loads(body)["items"] == [] and json.loads(body)["frame"] is None
    lane.view.write(image(3), result(3))
    events = EventFactory("r", "cam")
    for i in range(lane.cfg.last_events + 5):
        lane.sinks.publish(events.item("item.entered", frame(i), i, (0, 0, 5, 5), None))
    state = json.loads(get(lane.url + "/api/state")[2])
    assert state["frame"]["index"] == 3 and state["counters"]["frames_dropped"] == 2
    assert state["items"][0] == {
        "track_id": 7,
        "bbox": [10.0, 20.0, 60.0, 80.0],
        "label": "apple",
        "score": 0.91,
        "unknown": False,
        "topk": [["apple", 0.91], ["pear", 0.71]],
    }
    assert state["items"][1]["label"] is None
    seqs = [e["seq"] for e in state["events"]]
    assert len(seqs) == lane.cfg.last_events and seqs == sorted(seqs, reverse=True)


def test_live_page_and_script_are_served_self_contained(lane):
    code, headers, page = get(lane.url + "/live")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/live.js"' in page and b"http" not in page.replace(b"http-equiv", b"")
    code, headers, script = get(lane.url + "/live.js")
    assert code == 200 and b"/api/frame.jpg" in script and b"https://" not in script
    code, _, body = get(lane.url + "/nope")
    assert code == 404 and "/metrics" in json.loads(body)["pages"]


def test_token_is_required_as_a_bearer_except_for_the_page_shell():
    ln = Lane(token="s3cret")
    try:
        for path in ("/healthz", "/readyz", "/metrics", "/api/state", "/api/frame.jpg"):
            code, headers, _ = get(ln.url + path)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert get(ln.url + path, token="wrong")[0] == 401
        assert get(ln.url + "/healthz", token="s3cret")[0] == 200
        assert get(ln.url + "/live")[0] == 200
    finally:
        ln.close()


def test_requests_over_the_cap_get_503_and_a_stalled_client_is_dropped():
    ln = Lane(max_clients=1, client_timeout_s=0.5)
    try:
        stalled = socket.create_connection(("127.0.0.1", ln.server.port))  # never sends its request
        time.sleep(0.1)
        code, _, body = get(ln.url + "/healthz")
        assert code == 503 and b"busy" in body and ln.server.refused == 1
        t0 = time.monotonic()
        while get(ln.url + "/healthz")[0] != 200:
            assert time.monotonic() - t0 < 3.0, "the stalled client was never dropped"
            time.sleep(0.05)
        assert stalled.recv(1) == b""  # the server hung up on it
        stalled.close()
    finally:
        ln.close()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_with_prometheus_client_and_carry_the_lane(lane):
    lane.view.write(image(0), result(0))
    events = EventFactory("r", "cam")
    lane.sinks.publish(events.item("item.entered", frame(0), 7, (0, 0, 5, 5), None))
    lane.sinks.publish(events.item("item.entered", frame(1), 8, (0, 0, 5, 5), None))
    lane.sinks.publish(events.status("source.online", {"width": 1, "height": 1, "reconnects": 3}))
    for kind in ("basket.opened", "basket.item_added", "basket.item_added", "basket.item_removed"):
        lane.sinks.publish(events.basket(kind, "b1", {}))
    lane.state.metrics.observe_frame({"segment": 4.0, "boxes": 1.5, "nonsense": 1.0}, age_ms=42.0)
    lane.state.metrics.observe_frame({"segment": 6.0, "boxes": 0.5}, age_ms=140.0)
    code, headers, body = get(lane.url + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    fams = _families(body.decode())
    # Every documented metric is exposed (the parser names counter families without _total).
    for name in METRICS:
        assert PREFIX + name in fams, name
    for fam in fams.values():
        assert fam.name.startswith(PREFIX)
        assert all(s.labels.get("lane") == "default" for s in fam.samples), fam.name

    def value(metric: str, sample: str | None = None, **labels: str) -> float:
        hits = [
            s.value
            for s in fams[PREFIX + metric].samples
            if s.name == PREFIX + (sample or metric) and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(hits) == 1, (metric, labels, hits)
        return hits[0]

    assert value("frames_read", "frames_read_total") == 12
    assert value("frames_dropped", "frames_dropped_total") == 2
    assert value("events", "events_total", type="item.entered") == 2
    assert value("source_online") == 1 and value("source_reconnects", "source_reconnects_total") == 3
    assert value("frame_age_seconds", "frame_age_seconds_count") == 2
    assert value("frame_age_seconds", "frame_age_seconds_bucket", le="0.05") == 1
    assert value("stage_seconds", "stage_seconds_sum", stage="segment") == pytest.approx(0.010)
    assert value("stage_seconds", "stage_seconds_count", stage="classify") == 0
    assert value("sink_published", "sink_published_total", sink="MemorySink") == 7
    assert value("sink_queue_depth", sink="SpoolingSink") == 3
    assert value("sink_delivered", "sink_delivered_total", sink="SpoolingSink") == 6
    assert [s.labels["sink"] for s in fams[PREFIX + "sink_delivered"].samples] == ["SpoolingSink"]
    assert value("model_info", model="segmenter") == 1
    info = next(s for s in fams[PREFIX + "model_info"].samples if s.labels.get("model") == "segmenter")
    assert info.labels["sha256"] == "ab" * 32 and info.labels["provider"] == "cpu"
    assert value("ready") == 1 and value("up") == 1 and value("basket_items") == 1
    assert value("events", "events_total", type="basket.item_added") == 2
    assert all(s.labels.get("sink") != "LiveView" for s in fams[PREFIX + "sink_published"].samples)


def test_two_lanes_keep_their_own_registries_and_leave_the_global_one_alone():
    a, b = Lane(lane="a"), Lane(lane="b")
    try:
        a.state.metrics.observe_frame({"segment": 1.0}, 10.0)
        fa = _families(get(a.url + "/metrics")[2].decode())
        fb = _families(get(b.url + "/metrics")[2].decode())
        count = PREFIX + "frame_age_seconds_count"
        assert [s.value for s in fa[PREFIX + "frame_age_seconds"].samples if s.name == count] == [1]
        assert [s.value for s in fb[PREFIX + "frame_age_seconds"].samples if s.name == count] == [0]
        assert {s.labels["lane"] for s in fb[PREFIX + "frames_read"].samples} == {"b"}
        assert REGISTRY.get_sample_value(count, {"lane": "a"}) is None
    finally:
        a.close()
        b.close()


def test_lane_label_is_validated_by_the_config():
    with pytest.raises(ConfigError, match=r"lane\.name"):
        load_config(overrides={"lane.name": "two words"})
    with pytest.raises(ConfigError, match=r"unknown config key 'http\.lane'"):
        load_config(overrides={"http.lane": "a"})  # moved to lane.name


def test_lane_http_is_up_before_the_lane_is_built_and_reads_the_runtime_once_attached():
    ln = LaneHttp(http_cfg(bind="127.0.0.1:0")).start()
    try:
        assert get(ln.url + "/healthz")[0] == 200
        code, _, body = get(ln.url + "/readyz")
        assert code == 503 and "models are still loading" in json.loads(body)["reasons"]

        class Runtime:
            stats = RunStats(frames_read=5, frames_processed=4, frames_dropped=1)

        class Stage:
            identity = {"name": "seg", "version": "2", "sha256": "cd" * 32}

        ln.attach(Runtime(), SinkSet([MemorySink()]), lane_identity(segmenter=Stage()))
        ln.view.write(image(0), result(0))
        code, _, body = get(ln.url + "/readyz")
        assert code == 200, body
        fams = _families(get(ln.url + "/metrics")[2].decode())
        assert fams[PREFIX + "frames_processed"].samples[0].value == 4
        info = fams[PREFIX + "model_info"].samples[0]
        assert info.labels["model"] == "segmenter" and info.labels["name"] == "seg"
        ln.view.close()  # the runtime closes its outputs when the run ends
        code, _, body = get(ln.url + "/readyz")
        assert code == 503 and json.loads(body)["reasons"] == ["the run has ended"]
        assert fams[PREFIX + "up"].samples[0].value == 1
        assert _families(get(ln.url + "/metrics")[2].decode())[PREFIX + "up"].samples[0].value == 0
    finally:
        ln.close()


def test_lane_identity_leaves_out_what_is_absent():
    assert lane_identity() == {"models": {}}


def test_the_readme_lists_every_metric():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, (kind, _, _) in METRICS.items():
        full = PREFIX + name + ("_total" if kind == "counter" else "")
        assert f"| `{full}` |" in readme, f"README's metric table lacks {full}"


def test_observed_results_are_drawn_only_when_asked_and_drawn_frames_take_over():
    clock = Clock()
    drawn = []

    def draw(res: FrameResult) -> np.ndarray:
        drawn.append(res.frame.index)
        return image(res.frame.index)

    view = LiveView(http_cfg(), draw=draw, clock=clock)
    for i in range(30):  # the update thread's side: references only
        view.observe(result(i))
    assert drawn == [] and view.frame_info()["index"] == 29
    assert view.jpeg().frame_index == 29 and view.jpeg().frame_index == 29 and drawn == [29]
    view.write(image(100), result(100))  # a window or recorder drew this one: shown as drawn
    view.observe(result(101))  # ignored from now on (the drawn frames are the ones to show)
    clock.t += 1.0
    assert view.jpeg().frame_index == 100 and drawn == [29]


def test_lane_http_observes_every_frame_for_the_histograms():
    ln = LaneHttp(http_cfg(bind="127.0.0.1:0")).start()
    try:
        for i in range(3):
            ln.processed(result(i), age_ms=30.0)
        ln.drawn(4.0)
        fams = _families(get(ln.url + "/metrics")[2].decode())
        samples = {(s.name, s.labels.get("stage")): s.value for s in fams[PREFIX + "stage_seconds"].samples}
        assert samples[(PREFIX + "stage_seconds_count", "segment")] == 3
        assert samples[(PREFIX + "stage_seconds_count", "overlay")] == 1
        assert ln.view.frame_info()["index"] == 2
    finally:
        ln.close()


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("nonsense", "bad HTTP bind 'nonsense'"),
        ("0.0.0.0:0", "refusing to serve HTTP on 0.0.0.0 without events.token"),
    ],
)
def test_cli_bad_http_bind_is_a_one_line_error(bind, message, capsys, monkeypatch):
    monkeypatch.delenv("CHECKOUT_STREAM_TOKEN", raising=False)
    assert cli_main(["run", "missing.mp4", "--no-display", "--http", bind, "--events", "jsonl:/dev/null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def post(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_basket_close_is_a_post_that_asks_the_lane_and_needs_the_token():
    class Baskets:
        basket_id: str | None = None
        asked = 0

        def request_close(self) -> None:
            self.asked += 1

    class Runtime:
        stats = RunStats()

    ln = LaneHttp(http_cfg(bind="127.0.0.1:0"), token="s3cret").start()
    try:
        assert post(ln.url + "/api/basket/close", "s3cret")[0] == 409  # not built yet: no baskets
        baskets = Baskets()
        ln.attach(Runtime(), SinkSet([MemorySink()]), baskets=baskets)
        assert post(ln.url + "/api/basket/close")[0] == 401
        code, body = post(ln.url + "/api/basket/close", "s3cret")
        assert (code, body["closing"], baskets.asked) == (200, False, 0)  # nothing open: nothing to close
        baskets.basket_id = "b-1"
        code, body = post(ln.url + "/api/basket/close?lane=default", "s3cret")
        assert (code, body["basket_id"], body["closing"], baskets.asked) == (202, "b-1", True, 1)
        code, headers, _ = get(ln.url + "/api/basket/close", "s3cret")
        assert code == 405 and headers["Allow"] == "POST"
        assert post(ln.url + "/api/state", "s3cret")[0] == 405
        assert post(ln.url + "/api/basket/close?lane=other", "s3cret")[0] == 404
    finally:
        ln.close()
