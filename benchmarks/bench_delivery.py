"""Delivery sinks: what ``publish`` costs the loop with the MQTT or webhook sink attached, and what
reaches the other side, with the server up and with it away for the middle third of the run.

Scenarios (same pre-built item events, paced at ~1,000 events/s, far above a real lane):
  mqtt, broker up | mqtt, broker stopped for the middle third | webhook, server up |
  webhook, server answering 503 for the middle third.
A real Mosquitto broker (``.ci/install-services.sh``) and a loopback http.server; a subscriber with a
persistent session counts distinct event ids received.

Usage: python3 benchmarks/bench_delivery.py [--events N]
Writes benchmarks/results/delivery.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.config import load_config, replace
from stream.events import EventFactory
from stream.sinks import MqttSink, WebhookSink
from stream.types import Frame, Label
from tests.mqtt_broker import Broker, Subscriber, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "delivery.json"
EVENTS = load_config().events
CFG = replace(EVENTS, retry_initial_s=0.05, retry_max_s=0.5)


def item_events(n: int) -> list[dict[str, Any]]:
    f = EventFactory("bench", "rtsp://cam-01/stream")
    label = Label("sku-00421", 0.873, 0.21, (("sku-00421", 0.873), ("sku-00017", 0.66), ("sku-00999", 0.61)), False, 8)
    image = np.zeros((2, 2, 3), np.uint8)
    types = ("item.entered", "item.classified", "item.left")
    return [
        f.item(
            types[i % 3],
            Frame(image, i, time.monotonic(), time.time(), "cam"),
            i // 3,
            [100.5 + i % 50, 80.25, 260.0, 300.75],
            label,
        )
        for i in range(n)
    ]


class Hook:
    """Loopback POS endpoint; ``failing`` makes it answer 503."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.failing = False
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 503 if hook.failing else 200
                if code == 200:
                    hook.ids.update(e["event_id"] for e in body if "event_id" in e)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pos"


def drive(sink: Any, events: list[dict[str, Any]], outage: tuple[Any, Any] | None) -> np.ndarray:
    lat = np.empty(len(events), np.int64)
    clock = time.perf_counter_ns
    third = len(events) // 3
    for i, event in enumerate(events):
        if outage and i == third:
            outage[0]()
        if outage and i == 2 * third:
            outage[1]()
        a = clock()
        sink.publish(event)
        lat[i] = clock() - a
        if i % 10 == 9:
            time.sleep(0.01)
    return lat


def row(name: str, lat: np.ndarray, *, received: int, sent: int, drain_s: float, stats: dict) -> dict[str, Any]:
    us = lat / 1000.0
    return {
        "scenario": name,
        "events": sent,
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "p999_us": round(float(np.percentile(us, 99.9)), 2),
        "max_us": round(float(us.max()), 1),
        "received_distinct": received,
        "drain_s": round(drain_s, 3),
        "dropped": stats.get("dropped", 0),
        "resent_or_failures": stats.get("resent", stats.get("failures", 0)),
    }


def wait_until(pred: Any, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while not pred() and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    return time.monotonic() - t0


def bench_mqtt(events: list[dict[str, Any]], outage: bool, tmp: Path) -> dict[str, Any]:
    workdir = tmp / f"mqtt-{outage}"
    workdir.mkdir()
    broker = Broker(workdir, free_port()).start()
    sub = Subscriber(broker.port, "checkout-stream/#", client_id=f"bench-{outage}")
    sink = MqttSink("127.0.0.1", broker.port, CFG)
    lat = drive(sink, events, (broker.stop, broker.start) if outage else None)
    want = {e["event_id"] for e in events}
    drain = wait_until(lambda: {e["event_id"] for e in sub.events()} >= want)
    got = len({e["event_id"] for e in sub.events()} & want)
    sink.close()
    sub.close()
    broker.stop()
    return row(
        "mqtt, broker stopped 1/3 of the run" if outage else "mqtt, broker up",
        lat,
        received=got,
        sent=len(events),
        drain_s=drain,
        stats=sink.stats(),
    )


def bench_webhook(events: list[dict[str, Any]], outage: bool) -> dict[str, Any]:
    hook = Hook()
    sink = WebhookSink(hook.url, CFG)

    def fail() -> None:
        hook.failing = True

    def heal() -> None:
        hook.failing = False

    lat = drive(sink, events, (fail, heal) if outage else None)
    want = {e["event_id"] for e in events}
    drain = wait_until(lambda: hook.ids >= want)
    sink.close()
    hook.server.shutdown()
    return row(
        "webhook, 503 for 1/3 of the run" if outage else "webhook, server up",
        lat,
        received=len(hook.ids & want),
        sent=len(events),
        drain_s=drain,
        stats=sink.stats(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=6000)
    args = ap.parse_args()
    events = item_events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            bench_mqtt(events, False, Path(tmp)),
            bench_mqtt(events, True, Path(tmp)),
            bench_webhook(events, False),
            bench_webhook(events, True),
        ]
    versions = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    print(
        f"publish cost and delivery, {args.events} item events paced ~1000/s; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    head = f"{'scenario':<38}{'p50 us':>8}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}{'received':>10}{'drain s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['scenario']:<38}{r['p50_us']:>8.2f}{r['p99_us']:>9.2f}{r['p999_us']:>10.2f}{r['max_us']:>9.1f}"
            f"{r['received_distinct']:>10}{r['drain_s']:>9.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"versions": versions, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
