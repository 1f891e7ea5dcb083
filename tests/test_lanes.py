"""Many lanes in one process (``run --lanes``): the lanes file's validation, two real clips through
``run_lanes`` (events and frames log name their lane, ``seq`` per lane, one ONNX session per model), a
dead lane that never stops the other, the batching front, one HTTP server for several lanes, and lanes
on two processes publishing to one real Mosquitto broker that one consumer reads."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from stream.config import ConfigError, LaneSpec, load_config, load_lanes, replace
from stream.lanes import Models, run_lanes
from stream.outputs.lane import LanesHttp
from stream.sinks import MemorySink
from stream.stages import onnx_model
from stream.stages.segment import SegmentBatcher
from stream.types import SegMap
from tests.test_http import get, image, result

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "data" / "clips"
GIF = CLIPS / "store-aisle-detection.gif"  # 480x270, 67 frames
CAR = CLIPS / "car-detection.mp4"  # 768x432 at 12.5 fps
# The real belt clip (480x270, 37 frames, one bolt): the clips above are not checkout scenes and
# segmenter v3 sees no item in the store-aisle GIF nor in the car clip's first 40 frames.
BELT = REPO.parent / "shared" / "data" / "real" / "belt" / "bolt-multi-size-detection.gif"

needs_clips = pytest.mark.skipif(
    not (GIF.is_file() and CAR.is_file() and BELT.is_file()), reason="../shared/data/clips or real/belt is absent"
)


def lanes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lanes.yaml"
    path.write_text(text)
    return path


# --- the lanes file -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ("expected 'lanes:'",)),
        ("lanes: []\n", ("expected 'lanes:'",)),
        ("lanes: [x]\n", ("lane #1", "expected a mapping")),
        ("lanes: [{source: a.mp4}]\n", ("lane #1", "'name' is missing")),
        ("lanes: [{name: two words, source: a.mp4}]\n", ("lane 'two words'", "'name'")),
        ("lanes: [{name: a}]\n", ("lane 'a'", "'source' is missing")),
        ("lanes: [{name: a, source: a.mp4, srouce: b}]\n", ("lane 'a'", "unknown config key 'srouce'")),
        ("lanes: [{name: a, source: a.mp4, track: {min_hitz: 3}}]\n", ("lane 'a'", "track.min_hitz")),
        ("lanes: [{name: a, source: a.mp4, track: {min_hits: 0}}]\n", ("lane 'a'", "track.min_hits")),
        ("lanes: [{name: a, source: a.mp4, lane: {name: b}}]\n", ("lane 'a'", "'name:'")),
        ("lanes: [{name: a, source: a.mp4, zone: '0,0 10,10'}]\n", ("lane 'a'", "at least 3 points")),
        ("lanes: [{name: a, source: a.mp4}, {name: a, source: b.mp4}]\n", ("lane 'a'", "used twice")),
        ("trak: {min_hits: 3}\nlanes: [{name: a, source: a.mp4}]\n", ("unknown config key 'trak'",)),
        (
            "lanes: [{name: a, source: a.mp4}, {name: b, source: b.mp4, http: {bind: '127.0.0.1:9'}}]\n",
            ("lane 'b'", "http.bind", "whole process"),
        ),
        (
            "lanes: [{name: a, source: a.mp4, segment: {batch_window_ms: 5}}, {name: b, source: b.mp4}]\n",
            ("lane 'b'", "segment.batch_window_ms"),
        ),
        (
            "events: {spool_dir: /tmp/spool}\n"
            "lanes: [{name: a, source: a.mp4}, {name: b, source: b.mp4, events: {sinks: ['mqtt://h']}}]\n",
            ("lane 'b'", "lane 'a'", "events.spool_dir"),
        ),
    ],
)
def test_a_bad_lanes_file_is_one_error_naming_the_lane_and_key(tmp_path: Path, text: str, needles: tuple) -> None:
    with pytest.raises(ConfigError) as err:
        load_lanes(lanes_file(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_lanes_file_layers_defaults_shared_sections_lane_sections_then_cli(tmp_path: Path) -> None:
    path = lanes_file(
        tmp_path,
        "track: {min_hits: 4, max_lost_frames: 9}\n"
        "lanes:\n"
        "  - {name: a, source: a.mp4, catalog: cat-a, zone: '0,0 100,0 100,50'}\n"
        "  - {name: b, source: rtsp://cam/b, station: st-b, track: {min_hits: 2}, basket: {mode: tray}}\n",
    )
    a, b = load_lanes(path, overrides={"source.realtime": True, "track.max_lost_frames": 11})
    assert (a.name, a.source, a.catalog, a.config.lane.name) == ("a", "a.mp4", "cat-a", "a")
    assert (b.name, b.source, b.catalog, b.config.lane.name) == ("b", "rtsp://cam/b", None, "b")
    assert a.config.track.min_hits == 4 and b.config.track.min_hits == 2
    assert a.config.track.max_lost_frames == b.config.track.max_lost_frames == 11  # the CLI wins
    assert a.config.source.realtime and b.config.source.realtime
    assert a.config.basket.mode == "belt" and b.config.basket.mode == "tray"
    assert a.config.station.zones[0].polygon == ((0, 0), (100, 0), (100, 50)) and not b.config.station.zones
    assert (a.config.station.path, b.config.station.path) == ("", "st-b")


def test_lane_name_moved_from_http_to_lane() -> None:
    assert load_config().lane.name == "default"
    with pytest.raises(ConfigError, match=r"unknown config key 'http\.lane'"):
        load_config(overrides={"http.lane": "x"})


def test_cli_lanes_errors_are_one_line(tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, cli  # noqa: PLC0415

    bad = lanes_file(tmp_path, "lanes: [{name: a, source: a.mp4, track: {min_hitz: 3}}]\n")
    assert_one_line_error(cli("run", "--lanes", str(bad)), "lane 'a'", "track.min_hitz")
    good = lanes_file(tmp_path, "lanes: [{name: a, source: a.mp4}]\n")
    assert_one_line_error(cli("run", "x.mp4", "--lanes", str(good)), "not both")
    assert_one_line_error(cli("run", "--no-display"), "--lanes")


# --- real lanes ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def car_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 frames of the real car clip, as a file of its own (a second, different lane)."""
    out = tmp_path_factory.mktemp("clip") / "car40.mp4"
    cap = cv2.VideoCapture(str(CAR))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 12.5, (768, 432))
    for _ in range(40):
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    return out


def specs(tmp_path: Path, lanes: list[tuple[str, str]], extra: str = "") -> list[LaneSpec]:
    body = "".join(f"  - {{name: {n}, source: '{s}'}}\n" for n, s in lanes)
    path = lanes_file(tmp_path, f"runtime: {{stats_interval_s: 0}}\n{extra}lanes:\n{body}")
    return load_lanes(path)


class SessionCounter:
    """Counts the ONNX Runtime sessions created (one per model load)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = onnx_model.ort.InferenceSession

        def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
            self.paths.append(Path(str(path)).name)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(onnx_model.ort, "InferenceSession", counting)


@needs_clips
@pytest.mark.data
@pytest.mark.slow
def test_two_real_clips_in_one_process(tmp_path: Path, car_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = SessionCounter(monkeypatch)
    sinks: dict[str, MemorySink] = {}

    def sink(lane: LaneSpec) -> MemorySink:
        return sinks.setdefault(lane.name, MemorySink())

    lanes = specs(tmp_path, [("belt-1", str(BELT)), ("belt-2", str(car_clip))])
    frames_log = tmp_path / "frames.jsonl"
    summaries = run_lanes(lanes, threading.Event(), sinks=sink, frames_log=frames_log)

    assert summaries["belt-1"]["frames_processed"] == 37 and summaries["belt-2"]["frames_processed"] == 40
    assert sessions.paths == ["segmenter.onnx"]  # one session for both lanes (no catalog: no embedder)
    for name, sink_ in sinks.items():
        events = sink_.events
        assert {e["lane"] for e in events} == {name}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # gap-free per lane
        assert events[-1]["type"] == "run.summary"
    assert [e["type"] for e in sinks["belt-1"].events].count("item.entered") == 1  # the one bolt
    records = [json.loads(line) for line in frames_log.read_text().splitlines()]
    by_lane = {n: [r["frame_index"] for r in records if r["lane"] == n] for n in ("belt-1", "belt-2")}
    assert len(by_lane["belt-1"]) == 37 and len(by_lane["belt-2"]) == 40 and len(records) == 77
    assert all(ix == sorted(ix) for ix in by_lane.values())


@needs_clips
@pytest.mark.data
@pytest.mark.slow
def test_shared_catalog_and_embedder_are_built_once(
    tmp_path: Path, car_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _catalog(tmp_path)
    sessions = SessionCounter(monkeypatch)
    models = Models()
    lanes = specs(tmp_path, [("a", str(GIF)), ("b", str(car_clip)), ("c", str(GIF))])
    summaries = run_lanes(lanes, threading.Event(), sinks=lambda _lane: MemorySink(), catalog=catalog, models=models)
    assert all("error" not in s for s in summaries.values())
    assert sorted(sessions.paths) == ["embedder.onnx", "segmenter.onnx"]
    assert len(models.catalogs) == 1 and len(models.embedders) == 1 and len(models.segmenters) == 1


def _catalog(tmp_path: Path) -> Path:
    from stream.stages.catalog import Catalog  # noqa: PLC0415
    from stream.stages.embed import Embedder  # noqa: PLC0415
    from stream.synthetic.products import DEMO_PRODUCTS, render_packshot  # noqa: PLC0415

    photos = tmp_path / "photos"
    for pid in DEMO_PRODUCTS[:3]:
        (photos / pid).mkdir(parents=True)
        cv2.imwrite(str(photos / pid / "a.jpg"), render_packshot(pid))
    cfg = load_config()
    Catalog.build(photos, Embedder(cfg.classify.model), cfg.catalog).save(tmp_path / "catalog")
    return tmp_path / "catalog"


@needs_clips
@pytest.mark.data
@pytest.mark.network
@pytest.mark.slow
def test_a_dead_lane_never_stops_the_others(tmp_path: Path, car_clip: Path) -> None:
    from tests.mqtt_broker import free_port  # noqa: PLC0415

    dead_rtsp = f"rtsp://127.0.0.1:{free_port()}/nothing"  # nothing listens: refused, retried for ever
    sinks: dict[str, MemorySink] = {}
    lanes = specs(
        tmp_path,
        [("good", str(car_clip)), ("missing", str(tmp_path / "missing.mp4")), ("camera", dead_rtsp)],
        extra="source: {realtime: true, open_timeout_s: 0.5, backoff_max_s: 0.3}\n",
    )
    stop = threading.Event()
    out: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: out.update(run_lanes(lanes, stop, sinks=lambda lane: sinks.setdefault(lane.name, MemorySink())))
    )
    t0 = time.monotonic()
    runner.start()
    try:
        # 40 frames paced at 12.5 fps: 3.2 s; the dead camera keeps reconnecting meanwhile.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            e["type"] == "run.summary" for e in sinks.get("good", MemorySink()).events
        ):
            time.sleep(0.05)
        good_s = time.monotonic() - t0
        assert any(e["type"] == "run.summary" for e in sinks["good"].events), "the good lane never finished"
        assert runner.is_alive()  # the camera lane still retries
        camera = sinks["camera"].events
        assert any(e["type"] == "source.offline" for e in camera)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive(), "SIGINT-style stop did not end every lane"
    assert good_s < 20
    assert out["good"]["frames_processed"] >= 30  # paced: a few may be dropped on a busy box
    assert "not found" in out["missing"]["error"]
    assert out["camera"]["frames_processed"] == 0 and "error" not in out["camera"]


# --- the batching front -------------------------------------------------------------------------------


class FakeSegmenter:
    """segment_batch records its batch sizes; each map's class value is the image's first pixel."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    def segment_batch(self, images: list[np.ndarray]) -> list[SegMap]:
        self.batches.append(len(images))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return [
            SegMap(np.full((4, 4), im[0, 0, 0], np.uint8), np.ones((4, 4), np.float32), ("background", "item"), (4, 4))
            for im in images
        ]


def _submit_together(batcher: SegmentBatcher, values: list[int]) -> dict[int, Any]:
    got: dict[int, Any] = {}
    gate = threading.Barrier(len(values))

    def one(v: int) -> None:
        gate.wait()
        try:
            got[v] = int(batcher.client().segment(np.full((4, 4, 3), v, np.uint8)).classes[0, 0])
        except RuntimeError as exc:
            got[v] = str(exc)

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    return got


def test_batcher_segments_frames_submitted_together_in_one_call_and_returns_each_its_own() -> None:
    seg = FakeSegmenter()
    batcher = SegmentBatcher(seg, window_s=0.5, max_batch=3)
    t0 = time.monotonic()
    assert _submit_together(batcher, [1, 2, 3]) == {1: 1, 2: 2, 3: 3}
    assert seg.batches == [3] and batcher.batches == 1 and batcher.frames == 3
    assert time.monotonic() - t0 < 0.4  # a full batch does not wait out the window


def test_a_lone_lane_waits_at_most_the_window() -> None:
    seg = FakeSegmenter()
    batcher = SegmentBatcher(seg, window_s=0.02, max_batch=4)
    t0 = time.monotonic()
    assert int(batcher.client().segment(np.full((4, 4, 3), 9, np.uint8)).classes[0, 0]) == 9
    assert 0.015 <= time.monotonic() - t0 < 0.5 and seg.batches == [1]


def test_frames_arriving_while_a_batch_runs_form_the_next_one() -> None:
    seg = FakeSegmenter(delay_s=0.1)
    batcher = SegmentBatcher(seg, window_s=0.0, max_batch=8)
    got: dict[int, int] = {}
    first = threading.Thread(
        target=lambda: got.update({1: int(batcher.segment(np.ones((4, 4, 3), np.uint8)).classes[0, 0])})
    )
    first.start()
    time.sleep(0.03)  # the first batch is running now
    assert _submit_together(batcher, [5, 6]) == {5: 5, 6: 6}
    first.join(5)
    assert got == {1: 1} and seg.batches[0] == 1 and sum(seg.batches) == 3


def test_a_failed_batch_fails_every_frame_in_it() -> None:
    batcher = SegmentBatcher(FakeSegmenter(fail=True), window_s=0.5, max_batch=2)
    assert _submit_together(batcher, [1, 2]) == {1: "model exploded", 2: "model exploded"}


# --- one HTTP server, several lanes ---------------------------------------------------------------------


@pytest.mark.network
def test_one_server_serves_every_lane() -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    cfg = replace(load_config().http, bind="127.0.0.1:0")
    with LanesHttp(cfg) as server:
        a, b = server.lane("lane-a"), server.lane("lane-b")
        a.view.write(image(1), result(1))
        b.view.write(image(2), result(2))
        b.metrics.observe_frame({"segment": 3.0}, 12.0)
        code, _, body = get(server.url + "/metrics")
        assert code == 200
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert {s.labels["lane"] for s in fams["checkout_stream_frames_read"].samples} == {"lane-a", "lane-b"}
        counts = {
            s.labels["lane"]: s.value
            for s in fams["checkout_stream_frame_age_seconds"].samples
            if s.name.endswith("_count")
        }
        assert counts == {"lane-a": 0, "lane-b": 1}
        code, _, body = get(server.url + "/api/state?lane=lane-b")
        assert code == 200 and json.loads(body)["lane"] == "lane-b"
        code, _, body = get(server.url + "/api/state")
        assert code == 200 and set(json.loads(body)["lanes"]) == {"lane-a", "lane-b"}
        code, headers, _ = get(server.url + "/api/frame.jpg?lane=lane-b")
        assert code == 200 and headers["X-Frame-Index"] == "2"
        code, _, body = get(server.url + "/readyz?lane=nope")
        assert code == 404 and json.loads(body)["lanes"] == ["lane-a", "lane-b"]
        code, _, body = get(server.url + "/readyz")
        assert code == 503 and set(json.loads(body)["lanes"]) == {"lane-a", "lane-b"}  # no runtime attached
        conn = http.client.HTTPConnection("127.0.0.1", server.server.port, timeout=5)
        conn.request("GET", "/live")
        answer = conn.getresponse()
        assert answer.status == 302 and answer.getheader("Location") == "/live?lane=lane-a"
        conn.close()
        code, _, page = get(server.url + "/live?lane=lane-b")
        assert code == 200 and b"<html" in page.lower()


# --- beyond one box: lanes on two processes, one broker, one consumer --------------------------------------


@needs_clips
@pytest.mark.data
@pytest.mark.network
@pytest.mark.slow
def test_two_processes_publish_to_one_broker_and_one_consumer_sees_every_lane(tmp_path: Path, car_clip: Path) -> None:
    from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber  # noqa: PLC0415

    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (.ci/install-services.sh)")
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "checkout-stream/+/events/#", client_id="pos-consumer", clean=True)
    try:
        spec = f"mqtt://127.0.0.1:{broker.port}"
        box1 = lanes_file(
            tmp_path,
            f"runtime: {{stats_interval_s: 0}}\nlanes:\n  - {{name: box1-lane1, source: '{BELT}'}}\n"
            f"  - {{name: box1-lane2, source: '{car_clip}'}}\n",
        )
        cmd = [sys.executable, "-m", "stream", "run", "--no-display", "--events", spec]
        procs = [
            subprocess.Popen([*cmd, "--lanes", str(box1)], cwd=REPO, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([*cmd, str(BELT), "--lane", "box2-lane1"], cwd=REPO, stderr=subprocess.PIPE, text=True),
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
        lanes = {"box1-lane1", "box1-lane2", "box2-lane1"}

        def done(s: Subscriber) -> bool:
            return {e["lane"] for e in s.events() if e["type"] == "run.summary"} == lanes

        assert sub.wait_for(done, timeout=15), {e["lane"] for e in sub.events()}
        for lane in lanes:
            seqs = sorted({e["seq"] for e in sub.events() if e["lane"] == lane})  # QoS 1: dedupe by id/seq
            assert seqs == list(range(1, len(seqs) + 1)), lane
            if lane != "box1-lane2":  # the belt clip's bolt; the car clip holds no checkout item
                assert any(e["type"] == "item.entered" for e in sub.events() if e["lane"] == lane), lane
        topics = {t.split("/")[1] for t, _, _ in sub.messages}
        assert topics == lanes
    finally:
        sub.close()
        broker.stop()


@needs_clips
@pytest.mark.data
@pytest.mark.network
@pytest.mark.slow
def test_sigint_stops_every_lane_and_prints_a_summary_per_lane(tmp_path: Path, car_clip: Path) -> None:
    import signal  # noqa: PLC0415

    from tests.mqtt_broker import free_port  # noqa: PLC0415

    path = lanes_file(
        tmp_path,
        "runtime: {stats_interval_s: 0}\nsource: {realtime: true, open_timeout_s: 0.5, backoff_max_s: 0.3}\n"
        f"lanes:\n  - {{name: paced, source: '{car_clip}'}}\n"
        f"  - {{name: camera, source: 'rtsp://127.0.0.1:{free_port()}/x'}}\n",
    )
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "run", "--lanes", str(path), "--events", f"jsonl:{events}"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (events.is_file() and '"paced"' in events.read_text()):
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 5, err
    assert proc.returncode == 0, err
    assert "lane paced:" in err and "lane camera:" in err and err.count("frame age") == 2, err
    summaries = [json.loads(line) for line in events.read_text().splitlines() if '"run.summary"' in line]
    assert {e["lane"] for e in summaries} == {"paced", "camera"}


@needs_clips
@pytest.mark.data
@pytest.mark.network
@pytest.mark.slow
def test_one_http_server_during_a_real_two_lane_run(tmp_path: Path, car_clip: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    from tests.mqtt_broker import free_port  # noqa: PLC0415

    port = free_port()
    lanes = specs(
        tmp_path,
        [("gif", str(GIF)), ("car", str(car_clip))],
        extra=f"source: {{realtime: true}}\nhttp: {{bind: '127.0.0.1:{port}'}}\n",
    )
    runner = threading.Thread(
        target=run_lanes, args=(lanes, threading.Event()), kwargs={"sinks": lambda _l: MemorySink()}
    )
    runner.start()
    url = f"http://127.0.0.1:{port}"
    try:
        processed: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(processed) == 2 and min(processed.values()) >= 10):
            time.sleep(0.2)
            try:
                code, _, body = get(url + "/metrics")
            except OSError:
                continue
            fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
            fam = fams.get("checkout_stream_frames_processed")
            processed = {s.labels["lane"]: s.value for s in fam.samples} if fam else {}
        assert set(processed) == {"gif", "car"} and min(processed.values()) >= 10, processed
        for lane in ("gif", "car"):
            code, _, body = get(f"{url}/readyz?lane={lane}")
            assert code == 200, body
            state = json.loads(get(f"{url}/api/state?lane={lane}")[2])
            assert state["lane"] == lane and state["counters"]["frames_processed"] >= 10
            code, _, picture = get(f"{url}/api/frame.jpg?lane={lane}")
            assert code == 200 and picture[:2] == b"\xff\xd8"
        fams = {f.name: f for f in text_string_to_metric_families(get(url + "/metrics")[2].decode())}
        info = {s.labels["lane"] for s in fams["checkout_stream_model_info"].samples}
        assert info == {"gif", "car"}
    finally:
        runner.join(60)
    assert not runner.is_alive()


@needs_clips
@pytest.mark.data
@pytest.mark.slow
def test_batched_lanes_report_what_unbatched_lanes_report(tmp_path: Path, car_clip: Path) -> None:
    def items(window_ms: float) -> tuple[dict[str, list[tuple]], Models]:
        sinks: dict[str, MemorySink] = {}
        models = Models()
        lanes = specs(
            tmp_path, [("gif", str(GIF)), ("car", str(car_clip))], extra=f"segment: {{batch_window_ms: {window_ms}}}\n"
        )
        run_lanes(lanes, threading.Event(), sinks=lambda lane: sinks.setdefault(lane.name, MemorySink()), models=models)
        keep = ("type", "track_id", "frame_index", "bbox")
        return {
            n: [tuple(str(e.get(k)) for k in keep) for e in s.events if "track_id" in e] for n, s in sinks.items()
        }, models

    plain, _ = items(0)
    batched, models = items(50)
    assert plain == batched and all(plain.values())
    batcher = models.batchers[0]
    assert batcher.frames == 67 + 40 + 2  # every frame and each lane's warm-up went through it
    assert batcher.batches < batcher.frames  # frames of the two lanes shared calls


@pytest.mark.network
@pytest.mark.slow
def test_live_page_of_each_lane_in_a_real_browser(tmp_path: Path) -> None:
    from tests.browser import BROWSER_MISSING, Browser  # noqa: PLC0415
    from tests.fakes import frame  # noqa: PLC0415

    if BROWSER_MISSING is not None:
        pytest.skip(BROWSER_MISSING)
    from stream.types import Detections, FrameResult, Label, TrackView  # noqa: PLC0415

    cfg = replace(load_config().http, bind="127.0.0.1:0")
    stop = threading.Event()

    def feed(view: Any, product: str) -> None:
        label = Label(product, 0.9, 0.2, ((product, 0.9),), False, 3)
        i = 0
        while not stop.is_set():
            img = np.full((240, 320, 3), 90, np.uint8)
            views = (TrackView(7, (10.0, 80.0, 60.0, 130.0), 0, label),)
            view.write(img, FrameResult(frame(i, 320, 240), Detections.empty(), views, ()))
            i += 1
            time.sleep(1 / 15)

    with LanesHttp(cfg) as server, Browser(tmp_path / "profile") as browser:
        feeders = [
            threading.Thread(target=feed, args=(server.lane(name).view, product), daemon=True)
            for name, product in (("lane-a", "apple"), ("lane-b", "pear"))
        ]
        for t in feeders:
            t.start()
        try:
            for url, lane, product in (("/live?lane=lane-b", "lane-b", "pear"), ("/live", "lane-a", "apple")):
                browser.open(server.url + url)
                shown = browser.wait_for(
                    "const l = document.getElementById('lane').innerText, i = document.getElementById('items')"
                    ".innerText; return l && i.includes('" + product + "') ? l : null;"
                )
                assert shown == lane
        finally:
            stop.set()
