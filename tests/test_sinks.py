"""Event sinks with real files, pipes and sockets on 127.0.0.1: ordering, slow-client cut-off with a
fast publish, resume/replay without loss or duplicates, gap markers, token checks, broken pipes."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stream.config import EventsConfig, load_config, replace
from stream.events import EventFactory, validate
from stream.sinks import JsonlFileSink, SinkError, SinkSet, StdoutSink, TcpSink, make_sinks

REPO = Path(__file__).resolve().parents[1]


def cfg(client_buffer: int = 1024, replay_ring: int = 10000, token: str = "") -> EventsConfig:
    return replace(load_config().events, sinks=(), client_buffer=client_buffer, replay_ring=replay_ring, token=token)


def make_events(n: int, pad: int = 0, run_id: str = "run-s") -> list[dict[str, Any]]:
    f = EventFactory(run_id, "cam0")
    return [f.status("source.online", {"i": i, "pad": "x" * pad}) for i in range(n)]


def connect(sink: TcpSink, hello: bytes | None = b"\n", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", sink.port))
    if hello is not None:
        sock.sendall(hello)
    return sock


def read_lines(sock: socket.socket, n: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Read JSON lines until ``n`` arrived or EOF (n None), or fail after ``timeout``."""
    sock.settimeout(timeout)
    buf, out = b"", []
    deadline = time.monotonic() + timeout
    while n is None or len(out) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(out)} lines, expected {n}")
        try:
            data = sock.recv(1 << 16)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        out += [json.loads(line) for line in lines]
    return out


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def seqs(lines: list[dict]) -> list[int]:
    return [e["seq"] for e in lines]


# -- make_sinks ---------------------------------------------------------------------------------


def test_make_sinks_empty() -> None:
    assert make_sinks([], cfg()) == []


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "stdout:",
        "tcp://",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:notaport",
        "tcp://127.0.0.1:70000",
        "tcp://127.0.0.1:9000/path",
        "udp://127.0.0.1:9000",
        "jsonl:",
        "events.jsonl",
        "file:events.jsonl",
    ],
)
def test_make_sinks_rejects_bad_specs_listing_valid_forms(spec: str) -> None:
    with pytest.raises(SinkError, match=r"valid forms: stdout, tcp://HOST:PORT.*jsonl:PATH"):
        make_sinks([spec], cfg())


@pytest.mark.network
def test_make_sinks_builds_each_kind(tmp_path: Path) -> None:
    sinks = make_sinks(["stdout", "tcp://127.0.0.1:0", f"jsonl:{tmp_path / 'e.jsonl'}"], cfg())
    try:
        assert [type(s) for s in sinks] == [StdoutSink, TcpSink, JsonlFileSink]
        assert sinks[1].port > 0  # type: ignore[attr-defined]
    finally:
        for s in sinks:
            s.close()


def test_make_sinks_bad_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="missing-dir"):
        make_sinks([f"jsonl:{tmp_path / 'missing-dir' / 'e.jsonl'}"], cfg())


# -- file and stdout ----------------------------------------------------------------------------


def test_jsonl_file_round_trip_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first, second = make_events(0), make_events(300)
    for batch in (first, second[:100], second[100:]):
        sink = JsonlFileSink(path)
        for event in batch:
            sink.publish(event)
        sink.close()
        assert sink.stats()["written"] == len(batch)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == second


def test_stdout_sink_writes_one_compact_line_per_event() -> None:
    stream = io.StringIO()
    sink = StdoutSink(stream)
    events = make_events(50)
    for event in events:
        sink.publish(event)
    sink.close()
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == events
    assert all(" " not in line for line in lines)


class SlowStream(io.StringIO):
    def write(self, s: str) -> int:
        time.sleep(0.05)
        return super().write(s)


def test_stdout_sink_drops_and_counts_instead_of_blocking_on_a_slow_terminal() -> None:
    sink = StdoutSink(SlowStream(), max_queue=8)
    t0 = time.perf_counter()
    for event in make_events(500):
        sink.publish(event)
    elapsed = time.perf_counter() - t0
    sink.close()
    stats = sink.stats()
    assert elapsed < 0.5, f"publish blocked: {elapsed:.3f} s for 500 events"
    assert stats["dropped"] > 0 and stats["published"] + stats["dropped"] == 500
    assert stats["written"] == stats["published"]  # close() flushed what was accepted


def test_stdout_sink_goes_quiet_on_a_closed_pipe() -> None:
    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    sink = StdoutSink(stream)
    for event in make_events(20):
        sink.publish(event)
    wait_for(lambda: sink.broken_pipe)
    sink.publish(make_events(1)[0])  # after the break: no error, just counted
    sink.close()
    stream.close()  # the fd now points at devnull, so closing the file flushes quietly
    assert sink.stats()["broken_pipe"] is True and sink.stats()["dropped"] >= 1


def test_stdout_sink_under_head_exits_quietly() -> None:
    code = textwrap.dedent("""
        import logging
        from stream.events import EventFactory
        from stream.sinks import StdoutSink
        logging.basicConfig(level=logging.WARNING)
        f = EventFactory("run", "cam0")
        sink = StdoutSink()
        for i in range(200_000):
            sink.publish(f.status("source.online", {"i": i}))
            if sink.broken_pipe:
                break
        sink.close()
        assert sink.broken_pipe
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1` exiting
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=20) == 0, err
    assert json.loads(first)["seq"] == 1
    assert "Traceback" not in err and "Exception ignored" not in err, err


# -- TCP ----------------------------------------------------------------------------------------


@pytest.mark.network
def test_tcp_refuses_non_loopback_without_token() -> None:
    with pytest.raises(SinkError, match="refusing to listen on 0.0.0.0 without events.token"):
        TcpSink("0.0.0.0", 0, cfg())


@pytest.mark.network
def test_tcp_two_clients_receive_all_events_in_order() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg())
    a, b = connect(sink, b'{"resume_after": 0}\n'), connect(sink, hello=None)  # b: silent, no replay
    wait_for(lambda: sink.stats()["clients_accepted"] == 2)
    time.sleep(0.3)  # b's hello window passes
    events = make_events(2000)
    got: dict[int, list[dict]] = {0: [], 1: []}
    readers = [threading.Thread(target=lambda i=i, s=s: got[i].extend(read_lines(s))) for i, s in enumerate((a, b))]
    for thread in readers:
        thread.start()
    for event in events:
        sink.publish(event)
    sink.close()
    for thread in readers:
        thread.join(10)
    a.close()
    b.close()
    assert got[0] == events and got[1] == events
    assert sink.stats()["clients_cut"] == 0


@pytest.mark.network
def test_tcp_stuck_client_is_cut_while_publish_stays_fast_and_others_unaffected() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg(client_buffer=256))
    stuck = connect(sink, rcvbuf=4096)
    reader = connect(sink, b'{"resume_after": 0}\n')
    got: list[dict] = []
    events = make_events(6000, pad=300)
    thread = threading.Thread(target=lambda: got.extend(read_lines(reader, len(events), timeout=20)))
    thread.start()
    wait_for(lambda: sink.stats()["clients_accepted"] == 2)
    time.sleep(0.3)
    durations = []
    for event in events:
        t0 = time.perf_counter()
        sink.publish(event)
        durations.append(time.perf_counter() - t0)
        if len(durations) % 50 == 0:
            time.sleep(0.001)  # a real loop publishes between frames; give the server thread air
    thread.join(25)
    stats = sink.stats()
    sink.close()
    durations.sort()
    assert stats["clients_cut"] == 1 and stats["dropped"] == 0
    assert got == events
    assert durations[len(durations) // 2] < 100e-6, f"median publish {durations[len(durations) // 2]:.6f} s"
    assert sum(durations) < 1.0, f"publishing took {sum(durations):.3f} s in total"
    assert len(read_lines(stuck, timeout=5)) < len(events)  # it saw EOF/reset before the end
    stuck.close()
    reader.close()


@pytest.mark.network
def test_tcp_resume_gets_exactly_the_missed_events() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg())
    events = make_events(300)
    first = connect(sink, b'{"resume_after": 0}\n')
    for event in events[:100]:
        sink.publish(event)
    got = read_lines(first, 50)  # the client reads some, then drops off
    last = got[-1]["seq"]
    first.close()
    for event in events[100:200]:
        sink.publish(event)
    replayed = sink.stats()["replayed"]
    again = connect(sink, json.dumps({"resume_after": last}).encode() + b"\n")
    wait_for(lambda: sink.stats()["replayed"] == replayed + 200 - last)
    for event in events[200:]:
        sink.publish(event)
    sink.close()
    rest = read_lines(again)
    again.close()
    assert seqs(got + rest) == list(range(1, 301))  # no loss, no duplicates, in order


@pytest.mark.network
def test_tcp_resume_beyond_the_ring_gets_one_gap_marker() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg(replay_ring=20))
    events = make_events(100)
    for event in events:
        sink.publish(event)
    wait_for(lambda: sink._last_seq == 100)
    client = connect(sink, b'{"resume_after": 10}\n')
    wait_for(lambda: sink.stats()["gaps"] == 1)
    for event in make_events(105)[100:]:
        sink.publish(event)
    sink.close()
    lines = read_lines(client)
    client.close()
    validate(lines[0])
    assert lines[0] == {"schema": "checkout-stream/event/1", "type": "stream.gap", "from_seq": 11, "to_seq": 80}
    assert seqs(lines[1:]) == list(range(81, 106))


@pytest.mark.network
def test_tcp_resume_after_a_seq_not_yet_published_gets_live_events_only() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg())
    events = make_events(20)
    for event in events[:10]:
        sink.publish(event)
    client = connect(sink, b'{"resume_after": 1000}\n')  # e.g. a consumer of a previous run
    wait_for(lambda: sink._clients and all(c.live for c in sink._clients.values()))
    for event in events[10:]:
        sink.publish(event)
    sink.close()
    assert read_lines(client) == events[10:]
    client.close()


@pytest.mark.network
@pytest.mark.parametrize(
    ("hello", "accepted"),
    [
        (None, False),  # says nothing: closed after the auth window
        (b"\n", False),  # no token
        (b'{"token": "wrong"}\n', False),
        (b'{"token": 12}\n', False),
        (b'{"token": "s3cret-t0ken", "resume_after": -1}\n', False),  # valid token, bad request
        (b"not json\n", False),
        (b'{"token": "s3cret-t0ken"}\n', True),
        (b'{"token": "s3cret-t0ken", "resume_after": 0}\n', True),
    ],
)
def test_tcp_token_is_required_when_configured(
    hello: bytes | None, accepted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = TcpSink("127.0.0.1", 0, cfg(token="s3cret-t0ken"), auth_timeout_s=0.3)
    client = connect(sink, hello)
    wait_for(lambda: sink.stats()["clients_accepted"] == 1)
    if accepted:
        wait_for(
            lambda: (
                sink.stats()["clients_rejected"] == 0 and sink._clients and all(c.live for c in sink._clients.values())
            )
        )
    else:
        wait_for(lambda: sink.stats()["clients_rejected"] == 1)
    events = make_events(10)
    for event in events:
        sink.publish(event)
    sink.close()
    assert read_lines(client) == (events if accepted else [])
    client.close()
    assert "s3cret-t0ken" not in caplog.text


@pytest.mark.network
def test_tcp_client_that_disconnects_is_forgotten() -> None:
    sink = TcpSink("127.0.0.1", 0, cfg())
    client = connect(sink)
    wait_for(lambda: sink.stats()["clients"] == 1)
    client.close()
    wait_for(lambda: sink.stats()["clients"] == 0)
    for event in make_events(10):
        sink.publish(event)
    sink.close()
    assert sink.stats()["clients_cut"] == 0 and sink.stats()["dropped"] == 0


# -- SinkSet ------------------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.closed = False

    def publish(self, event: dict) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict:
        return {"dropped": 2, "clients_cut": 1}


class BrokenSink:
    def publish(self, event: dict) -> None:
        raise RuntimeError("boom")

    def close(self) -> None:
        raise RuntimeError("boom")

    def stats(self) -> dict:
        return {}


def test_sink_set_empty() -> None:
    sinks = SinkSet([])
    sinks.publish(make_events(1)[0])
    sinks.close()
    assert sinks.stats() == {"published": 1, "errors": 0, "dropped": 0, "clients_cut": 0, "sinks": []}


def test_sink_set_fans_out_and_isolates_a_failing_sink() -> None:
    a, b = ListSink(), ListSink()
    sinks = SinkSet([a, BrokenSink(), b])
    events = make_events(5)
    for event in events:
        sinks.publish(event)
    sinks.close()
    assert a.events == events and b.events == events and a.closed and b.closed
    stats = sinks.stats()
    assert (stats["published"], stats["errors"], stats["dropped"], stats["clients_cut"]) == (5, 5, 4, 2)
    assert [s["sink"] for s in stats["sinks"]] == ["ListSink", "BrokenSink", "ListSink"]
