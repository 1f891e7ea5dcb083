"""Event publish latency: what ``publish`` costs the pipeline loop, with slow and stuck consumers.

Scenarios, measured side by side in one run on the same pre-built item events:
  tcp, no clients | tcp, 1 stuck client (connects, never reads) | tcp, 1 stuck + 1 reading client |
  SinkSet(stdout->devnull, jsonl file, tcp with 1 stuck + 1 reading client), and the same set with
  SinkSet's TCP-first publish order undone (A/B for that choice).
Each runs paced (bursts of 10 events, then 1 ms sleep: ~10k events/s, far above a real lane) and as
a tight loop (the worst case: the server thread competes with the publisher for the GIL).

Usage: python3 benchmarks/bench_sinks.py [--events N]
Writes benchmarks/results/sinks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.config import load_config, replace
from stream.events import EventFactory
from stream.sinks import JsonlFileSink, SinkSet, StdoutSink, TcpSink
from stream.types import Frame, Label

RESULTS = Path(__file__).resolve().parent / "results" / "sinks.json"
CFG = replace(load_config().events, sinks=(), client_buffer=1024, replay_ring=10000, token="")


def item_events(n: int) -> list[dict[str, Any]]:
    f = EventFactory("bench", "rtsp://cam-01/stream")
    label = Label("sku-00421", 0.873, 0.21, (("sku-00421", 0.873), ("sku-00017", 0.66), ("sku-00999", 0.61)), False, 8)
    image = np.zeros((2, 2, 3), np.uint8)
    types = ("item.entered", "item.classified", "item.left")
    out = []
    for i in range(n):
        frame = Frame(image, i, time.monotonic(), time.time(), "cam")
        out.append(f.item(types[i % 3], frame, i // 3, [100.5 + i % 50, 80.25, 260.0, 300.75], label))
    return out


class Clients:
    """A stuck client (small receive buffer, never reads) and optionally one that reads everything."""

    def __init__(self, port: int, stuck: bool, reader: bool) -> None:
        self.socks: list[socket.socket] = []
        self.received = 0
        self._threads: list[threading.Thread] = []
        if stuck:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"\n")
            self.socks.append(s)
        if reader:
            r = socket.create_connection(("127.0.0.1", port))
            r.sendall(b"\n")
            self.socks.append(r)
            t = threading.Thread(target=self._read, args=(r,), daemon=True)
            t.start()
            self._threads.append(t)
        time.sleep(0.3)  # let the hello windows pass so every client is live

    def _read(self, sock: socket.socket) -> None:
        while data := sock.recv(1 << 16):
            self.received += data.count(b"\n")

    def close(self) -> None:
        for t in self._threads:
            t.join(5)
        for s in self.socks:
            s.close()


def run(
    name: str,
    events: list[dict[str, Any]],
    *,
    paced: bool,
    stuck: bool,
    reader: bool,
    full_set: bool,
    tcp_last: bool,
    tmp: Path,
) -> dict[str, Any]:
    tcp = TcpSink("127.0.0.1", 0, CFG)
    clients = Clients(tcp.port, stuck, reader)
    sink: Any = tcp
    devnull = open(os.devnull, "w")  # noqa: SIM115
    if full_set:
        path = tmp / f"events-{len(list(tmp.iterdir()))}.jsonl"
        sink = SinkSet([StdoutSink(devnull), JsonlFileSink(path), tcp])
        if tcp_last:  # A/B: undo SinkSet's TCP-first order to measure what it buys
            sink._order = list(sink.sinks)
    lat = np.empty(len(events), np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i, event in enumerate(events):
        a = clock()
        sink.publish(event)
        lat[i] = clock() - a
        if paced and i % 10 == 9:
            time.sleep(0.001)
    wall = time.perf_counter() - t0
    sink.close()
    clients.close()
    devnull.close()
    us = lat / 1000.0
    stats = tcp.stats()
    return {
        "scenario": name,
        "paced": paced,
        "events": len(events),
        "wall_s": round(wall, 3),
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "p999_us": round(float(np.percentile(us, 99.9)), 2),
        "max_us": round(float(us.max()), 1),
        "clients_cut": stats["clients_cut"],
        "tcp_dropped": stats["dropped"],
        "reader_received": clients.received if reader else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    events = item_events(args.events)
    line_bytes = len(json.dumps(events[0], separators=(",", ":")))
    scenarios = [
        ("tcp, no clients", False, False, False, False),
        ("tcp, 1 stuck", True, False, False, False),
        ("tcp, 1 stuck + 1 reader", True, True, False, False),
        ("set: stdout+jsonl+tcp(stuck+reader)", True, True, True, False),
        ("set, tcp published last (A/B)", True, True, True, True),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for paced in (True, False):
            for name, stuck, reader, full, last in scenarios:
                rows.append(
                    run(
                        name,
                        events,
                        paced=paced,
                        stuck=stuck,
                        reader=reader,
                        full_set=full,
                        tcp_last=last,
                        tmp=Path(tmp),
                    )
                )
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    print(
        f"publish latency, {args.events} item events of ~{line_bytes} bytes; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    head = (
        f"{'scenario':<38}{'mode':<7}{'p50 us':>8}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}{'cut':>5}"
        f"{'drop':>6}{'reader got':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        got = "" if r["reader_received"] is None else str(r["reader_received"])
        print(
            f"{r['scenario']:<38}{'paced' if r['paced'] else 'tight':<7}{r['p50_us']:>8.2f}"
            f"{r['p99_us']:>9.2f}{r['p999_us']:>10.2f}{r['max_us']:>9.1f}{r['clients_cut']:>5}"
            f"{r['tcp_dropped']:>6}{got:>12}"
        )
    base = next(r for r in rows if r["paced"] and r["scenario"] == "tcp, no clients")
    stuck = next(r for r in rows if r["paced"] and r["scenario"] == "tcp, 1 stuck")
    print(f"paced p99.9 ratio, 1 stuck / no clients: {stuck['p999_us'] / max(base['p999_us'], 1e-9):.2f}")
    first = next(r for r in rows if r["paced"] and r["scenario"].startswith("set:"))
    last = next(r for r in rows if r["paced"] and r["scenario"].startswith("set, tcp"))
    print(f"paced p99 ratio, set tcp-last / tcp-first: {last['p99_us'] / max(first['p99_us'], 1e-9):.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"versions": versions, "line_bytes": line_bytes, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
