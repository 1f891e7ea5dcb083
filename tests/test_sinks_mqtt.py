"""The MQTT sink against a real Mosquitto broker on loopback: topics per family, the retained basket,
a broker stopped and restarted mid-run with nothing lost and publish never blocking, a broker absent at
start, a spool overflow reported as stream.gap. Spec parsing is a table without a broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import EventsConfig, load_config, replace
from stream.events import EventFactory, validate
from stream.sinks import SinkError, make_sinks
from stream.sinks.mqtt import MqttSink, parse_mqtt
from stream.types import Frame
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, free_port

REPO = Path(__file__).resolve().parents[1]
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (.ci/install-services.sh)")


def cfg(spool: int = 100_000) -> EventsConfig:
    return replace(load_config().events, spool=spool, retry_initial_s=0.05, retry_max_s=0.3)


def item_events(n: int, lane: str = "default") -> list[dict[str, Any]]:
    f = EventFactory("run-m", "cam0", lane=lane)
    image = np.zeros((2, 2, 3), np.uint8)
    out = []
    for i in range(n):
        frame = Frame(image, i, time.monotonic(), time.time(), "cam0")
        out.append(f.item(("item.entered", "item.classified", "item.left")[i % 3], frame, i // 3, [0, 0, 5, 5], None))
    return out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, "checkout-stream", False)),
        ("mqtt://broker", ("broker", 1883, "checkout-stream", False)),
        ("mqtt://broker:1999/store-7/", ("broker", 1999, "store-7", False)),
        ("mqtts://broker/a/b", ("broker", 8883, "a/b", True)),
    ],
)
def test_spec_forms(spec: str, expected: tuple) -> None:
    assert parse_mqtt(spec) == expected


@pytest.mark.parametrize(
    "spec", ["mqtt://", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:x", "mqtt://h/a/#", "mqtt://h/+", "mqtt://h?q=1"]
)
def test_bad_specs_are_one_line_errors(spec: str) -> None:
    with pytest.raises(SinkError, match="expected mqtt://HOST") as err:
        make_sinks([spec], cfg())
    assert "\n" not in str(err.value)


@pytest.fixture
def broker(tmp_path: Path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed (.ci/install-services.sh)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def ids(events: list[dict]) -> list[str]:
    return [e["event_id"] for e in events]


@needs_broker
@pytest.mark.network
def test_events_arrive_in_order_on_one_topic_per_family_and_the_basket_is_retained(broker: Broker) -> None:
    sub = Subscriber(broker.port, "checkout-stream/#", clean=True)
    f = EventFactory("run-m", "cam0", lane="lane-2")
    sent = [
        f.basket("basket.opened", "run-m/lane-2/1", {"mode": "tray"}),
        f.basket(
            "basket.item_added",
            "run-m/lane-2/1",
            {"product": "cola", "unknown": False, "score": 0.9, "margin": 0.3, "zone": None},
            track_id=4,
        ),
        f.status("source.online", {}),
    ]
    sink = MqttSink("127.0.0.1", broker.port, cfg())
    for event in sent:
        sink.publish(event)
    assert sub.wait_for(lambda s: len(s.events()) == 3)
    sink.close()
    topics = [t for t, _, _ in sub.messages if "/events/" in t]
    assert topics == ["checkout-stream/lane-2/events/basket"] * 2 + ["checkout-stream/lane-2/events/source"]
    assert ids(sub.events()) == ids(sent)
    for event in sub.events():
        validate(event)
    sub.close()
    late = Subscriber(broker.port, "checkout-stream/+/basket", client_id="late", clean=True)  # connects after
    assert late.wait_for(lambda s: len(s.messages) == 1, 5)
    topic, state, retained = late.messages[0]
    assert (topic, retained, state["open"], state["basket_id"]) == (
        "checkout-stream/lane-2/basket",
        True,
        True,
        "run-m/lane-2/1",
    )
    assert state["receipt"]["items"] == [{"product": "cola", "quantity": 1, "track_ids": [4], "scores": [0.9]}]
    late.close()
    assert sink.stats()["delivered"] == 3 and sink.stats()["dropped"] == 0


@needs_broker
@pytest.mark.network
@pytest.mark.slow
def test_broker_stopped_mid_run_loses_nothing_and_publish_never_blocks(broker: Broker) -> None:
    sub = Subscriber(broker.port, "checkout-stream/#")  # a persistent session, as a POS would hold
    events = item_events(600)
    sink = MqttSink("127.0.0.1", broker.port, cfg())
    worst = 0.0
    for i, event in enumerate(events):
        if i == 200:
            assert sub.wait_for(lambda s: len(s.events()) >= 150, 10)
            broker.stop()
            assert broker.session_file.exists()  # the subscriber's session survives the restart
        if i == 400:
            assert sink.stats()["spooled"] >= 100  # held, not lost, while the broker was away
            broker.start()
        t0 = time.perf_counter()
        sink.publish(event)
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.005)  # ~200 events/s: the outage lasts ~1 s of publishing
    assert sub.wait_for(lambda s: {e["event_id"] for e in s.events()} >= set(ids(events)), 20), (
        f"missing {len(set(ids(events)) - {e['event_id'] for e in sub.events()})} events"
    )
    sink.close()
    st = sink.stats()
    assert st["connects"] >= 2 and st["dropped"] == 0 and st["undelivered"] == 0 and st["delivered"] == 600
    # Not waiting on the network (a hang is 1 s); the bound leaves room for a GIL switch (5 ms).
    assert worst < 0.05, f"publish took {worst * 1000:.1f} ms"
    got = [e["seq"] for e in sub.events()]
    first = {s: got.index(s) for s in dict.fromkeys(got)}
    assert sorted(first, key=first.get) == sorted(first)  # first deliveries in publish order
    sub.close()


@needs_broker
@pytest.mark.network
def test_broker_absent_at_start_is_connected_to_when_it_comes(tmp_path: Path) -> None:
    port = free_port()
    sink = MqttSink("127.0.0.1", port, cfg())
    events = item_events(50)
    t0 = time.perf_counter()
    for event in events:
        sink.publish(event)
    assert time.perf_counter() - t0 < 0.05
    time.sleep(0.3)
    assert sink.stats()["connected"] is False and sink.stats()["spooled"] == 50
    broker = Broker(tmp_path, port)
    broker.start()
    try:
        sub = Subscriber(port, "checkout-stream/#", clean=True)  # may miss the first: the spool is checked
        deadline = time.monotonic() + 10
        while sink.stats()["delivered"] < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        sink.close()
        assert sink.stats()["delivered"] == 50 and sink.stats()["connected"] is False
        sub.close()
    finally:
        broker.stop()


@needs_broker
@pytest.mark.network
def test_spool_overflow_drops_the_oldest_and_the_subscriber_gets_a_gap_event(broker: Broker) -> None:
    sub = Subscriber(broker.port, "checkout-stream/#")  # a persistent session survives the broker stop
    broker.stop()
    sink = MqttSink("127.0.0.1", broker.port, cfg(spool=5))
    events = item_events(20)
    for event in events:
        sink.publish(event)
    assert sink.stats()["dropped"] == 15
    broker.start()
    try:
        assert sub.wait_for(lambda s: len(s.events()) >= 6, 10)
    finally:
        sink.close()
        sub.close()
    gap, *rest = sub.events()
    assert gap["type"] == "stream.gap" and (gap["from_seq"], gap["to_seq"], gap["dropped"]) == (1, 15, 15)
    assert gap["lane"] == "default" and gap["sink"] == "mqtt"
    validate(gap)
    assert ids(rest) == ids(events[15:])
    st = sink.stats()
    assert (st["dropped"], st["delivered"], st["gaps"]) == (15, 5, 1)


@needs_broker
@pytest.mark.network
@pytest.mark.slow
def test_live_demo_with_the_broker_stopped_6_s_delivers_every_stdout_event(tmp_path: Path) -> None:
    """The real CLI, live-paced: every event printed on stdout reaches a subscriber (by event_id)
    although the broker is stopped for 6 s mid-run, and frame age during the outage is no worse."""
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "checkout-stream/#", client_id="pos-1")  # persistent session
    out, frames = tmp_path / "stdout.jsonl", tmp_path / "frames.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "stream",
        "demo",
        "--duration",
        "24",
        "--no-display",
        "--events",
        "stdout",
        "--events",
        f"mqtt://127.0.0.1:{broker.port}",
        "--frames-log",
        str(frames),
    ]
    with open(out, "w") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while out.stat().st_size == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # the first event: models loaded, frames flowing
        time.sleep(3)
        down = time.time()
        broker.stop()
        time.sleep(6)
        broker.start()
        up = time.time()
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        printed = {e["event_id"] for e in map(json.loads, out.read_text().splitlines()) if "event_id" in e}
        assert sub.wait_for(lambda s: {e.get("event_id") for e in s.events()} >= printed, 20), (
            f"{len(printed - {e.get('event_id') for e in sub.events()})} of {len(printed)} events missing"
        )
        assert "MQTT broker" in err and "lost" in err  # the outage really hit the run
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    rows = [json.loads(line) for line in frames.read_text().splitlines()]
    inside = [r["age_ms"] for r in rows if down <= r["capture_utc"] < up]
    rest = [r["age_ms"] for r in rows if not down <= r["capture_utc"] < up]
    assert len(inside) > 10 and len(rest) > 10
    assert np.percentile(inside, 50) <= 1.5 * np.percentile(rest, 50) + 50.0


@needs_broker
@pytest.mark.network
def test_disk_spool_sends_after_a_restart_what_the_broker_never_took(tmp_path: Path) -> None:
    port = free_port()
    config = replace(cfg(), spool_dir=str(tmp_path / "spool"))
    first = MqttSink("127.0.0.1", port, config, close_timeout_s=0.2)
    events = item_events(10)
    for event in events:
        first.publish(event)
    first.close()  # the run ends with the broker away
    assert first.stats()["undelivered"] == 10
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", port).start()
    sub = Subscriber(port, "checkout-stream/#", clean=True)
    try:
        second = MqttSink("127.0.0.1", port, config)  # the next run, same spool folder
        assert sub.wait_for(lambda s: len(s.events()) == 10, 10)
        second.close()
        assert ids(sub.events()) == ids(events) and second.stats()["delivered"] == 10
    finally:
        sub.close()
        broker.stop()
