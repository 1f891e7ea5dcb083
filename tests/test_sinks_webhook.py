"""The webhook sink against a real HTTP server on loopback (http.server in a thread): batches in order
with idempotency keys, a server that fails some requests (503, dropped connections, Retry-After),
a server that is away at start, a server that hangs (publish never blocks), a 4xx that is counted as
rejected, spool overflow reported as stream.gap, and bad specs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import EventsConfig, load_config, replace
from stream.events import EventFactory, validate
from stream.sinks import SinkError, make_sinks
from stream.sinks.webhook import WebhookSink
from stream.types import Frame
from tests.mqtt_broker import free_port

pytestmark = pytest.mark.network


def cfg(spool: int = 100_000, batch: int = 20, timeout_s: float = 2.0, token: str = "") -> EventsConfig:
    events = load_config().events
    hook = replace(events.webhook, batch=batch, timeout_s=timeout_s, token=token)
    return replace(events, spool=spool, retry_initial_s=0.02, retry_max_s=0.2, webhook=hook)


def item_events(n: int) -> list[dict[str, Any]]:
    f = EventFactory("run-w", "cam0")
    image = np.zeros((2, 2, 3), np.uint8)
    return [
        f.item("item.entered", Frame(image, i, time.monotonic(), time.time(), "cam0"), i, [0, 0, 5, 5], None)
        for i in range(n)
    ]


class Hook:
    """A POS endpoint: records each request (headers, events); ``plan(i)`` says what request i gets:
    an HTTP status, "drop" (close without answering) or ("sleep", s)."""

    def __init__(self, port: int = 0, plan: Any = lambda i: 200) -> None:
        self.requests: list[tuple[dict[str, str], list[dict]]] = []
        self.plan = plan
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    i = len(hook.requests)
                    hook.requests.append((dict(self.headers), json.loads(body)))
                what = hook.plan(i)
                if what == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(what, tuple):
                    time.sleep(what[1])
                    what = 200
                self.send_response(what)
                if what == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/pos/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, statuses: Any = (200,)) -> list[dict]:
        with self.lock:
            return [
                e
                for i, (_, events) in enumerate(self.requests)
                if self.plan(i) in statuses or isinstance(self.plan(i), tuple)
                for e in events
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return bool(pred())


def ids(events: list[dict]) -> list[str]:
    return [e["event_id"] for e in events]


def test_batches_arrive_in_order_with_a_stable_idempotency_key_and_the_token() -> None:
    hook = Hook()
    sink = WebhookSink(hook.url, cfg(batch=7, token="s3cret"))
    events = item_events(30)
    for event in events:
        sink.publish(event)
    assert wait(lambda: sink.stats()["delivered"] == 30)
    sink.close()
    hook.close()
    got = hook.accepted()
    assert ids(got) == ids(events)
    assert all(len(batch) <= 7 for _, batch in hook.requests)
    headers = hook.requests[0][0]
    assert headers["Content-Type"] == "application/json" and headers["Authorization"] == "Bearer s3cret"
    keys = [h["Idempotency-Key"] for h, _ in hook.requests]
    assert len(set(keys)) == len(keys)
    for event in got:
        validate(event)


def test_failed_requests_are_retried_until_everything_is_delivered() -> None:
    # 503 with Retry-After, a dropped connection, then success: in a cycle.
    plan = {0: 503, 1: "drop", 2: 200}
    hook = Hook(plan=lambda i: plan[i % 3])
    sink = WebhookSink(hook.url, cfg(batch=10))
    events = item_events(100)
    for event in events:
        sink.publish(event)
    assert wait(lambda: sink.stats()["delivered"] == 100)
    sink.close()
    hook.close()
    assert ids(hook.accepted()) == ids(events)  # each accepted once, in order
    retried = {}
    for i, (headers, batch) in enumerate(hook.requests):
        retried.setdefault(headers["Idempotency-Key"], []).append((plan[i % 3], ids(batch)))
    assert all(len({tuple(b) for _, b in tries}) == 1 for tries in retried.values())  # a retry is the same batch
    st = sink.stats()
    assert st["failures"] >= 2 * (st["posts"] // 3) and st["rejected"] == 0 and st["dropped"] == 0


def test_server_away_at_start_gets_everything_when_it_comes() -> None:
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", cfg())
    events = item_events(40)
    for event in events:
        sink.publish(event)
    time.sleep(0.3)
    assert sink.stats()["delivered"] == 0 and sink.stats()["failures"] >= 2
    hook = Hook(port)
    assert wait(lambda: sink.stats()["delivered"] == 40)
    sink.close()
    hook.close()
    assert ids(hook.accepted()) == ids(events)


def test_publish_never_waits_for_a_hanging_server() -> None:
    hook = Hook(plan=lambda i: ("sleep", 1.0) if i == 0 else 200)
    sink = WebhookSink(hook.url, cfg(batch=5))
    worst = 0.0
    for event in item_events(200):
        t0 = time.perf_counter()
        sink.publish(event)
        worst = max(worst, time.perf_counter() - t0)
    # Not waiting on the network (a hang is 1 s); the bound leaves room for a GIL switch (5 ms).
    assert worst < 0.05, f"publish took {worst * 1000:.1f} ms"
    assert wait(lambda: sink.stats()["delivered"] == 200)
    sink.close()
    hook.close()


def test_a_batch_refused_for_good_is_counted_as_rejected_and_delivery_goes_on() -> None:
    hook = Hook(plan=lambda i: 400 if i == 0 else 200)
    sink = WebhookSink(hook.url, cfg(batch=5))
    sink.publish(item_events(1)[0])
    assert wait(lambda: sink.stats()["rejected"] == 1)
    for event in item_events(3):
        sink.publish(event)
    assert wait(lambda: sink.stats()["delivered"] == 3)
    sink.close()
    hook.close()


def test_spool_overflow_while_away_is_reported_as_a_gap() -> None:
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", cfg(spool=5, batch=100))
    events = item_events(25)
    for event in events:
        sink.publish(event)
    hook = Hook(port)
    assert wait(lambda: sink.stats()["delivered"] == 5)
    sink.close()
    hook.close()
    got = hook.accepted()
    gaps = [e for e in got if e["type"] == "stream.gap"]
    assert len(gaps) == 1
    gap = gaps[0]
    validate(gap)
    delivered = {e["seq"] for e in got if e["type"] != "stream.gap"}
    missing = set(range(1, 26)) - delivered
    # A batch already in flight when the server was away is never dropped; the rest overflowed.
    assert (gap["sink"], gap["dropped"], len(missing)) == ("webhook", 20, 20)
    assert missing == set(range(gap["from_seq"], gap["to_seq"] + 1))
    assert {20 + k for k in range(1, 6)} <= delivered  # the newest were kept


def test_close_with_the_server_away_counts_what_is_undelivered() -> None:
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", cfg(), close_timeout_s=0.2)
    for event in item_events(10):
        sink.publish(event)
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 3.0
    assert sink.stats()["undelivered"] == 10


@pytest.mark.parametrize("spec", ["https://", "http://:80/x", "https://h:99999/x", "https://h/x#frag"])
def test_bad_specs_are_one_line_errors(spec: str) -> None:
    with pytest.raises(SinkError, match="expected https://HOST") as err:
        make_sinks([spec], cfg())
    assert "\n" not in str(err.value)


def test_disk_spool_delivers_after_a_restart_what_the_server_never_took(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    config = replace(cfg(), spool_dir=str(tmp_path / "spool"))
    first = WebhookSink(url, config, close_timeout_s=0.2)
    events = item_events(10)
    for event in events:
        first.publish(event)
    first.close()  # the process ends with the POS away
    assert first.stats()["undelivered"] == 10
    hook = Hook(port)
    second = WebhookSink(url, config)  # the next run, same spool folder
    assert wait(lambda: second.stats()["delivered"] == 10)
    second.close()
    hook.close()
    assert ids(hook.accepted()) == ids(events)
