"""A real Mosquitto broker on loopback for the MQTT tests (Debian package ``mosquitto``, installed by
``.ci/install-services.sh``), and a subscriber that records every message it receives.

The broker persists sessions to its own temporary directory, so a subscriber with a persistent
session (clean_session=False) keeps receiving what was published while it was away, across a broker
stop (SIGTERM) and restart: what a POS with a persistent session sees.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"mosquitto did not listen on {port} within {timeout} s")


class Broker:
    """``start()``/``stop()`` a mosquitto process on 127.0.0.1:``port`` (the same port each time)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        assert MOSQUITTO, "mosquitto is not installed"
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        # Started as root, mosquitto would drop to its own user, which cannot write a private temporary
        # directory: name the current user (no effect when not root) so the session file is saved.
        self.conf.write_text(
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nautosave_interval 1\nmax_queued_messages 0\n"
            "log_dest none\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)
        return self

    @property
    def session_file(self) -> Path:
        return self.workdir / "mosquitto.db"

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions (``session_file``) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """Subscribes to ``topic`` with QoS 1 and a persistent session; records (topic, payload, retain)."""

    def __init__(self, port: int, topic: str, client_id: str = "test-sub", clean: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber never subscribed"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p for t, p, _ in self.messages if "/events/" in t]

    def wait_for(self, pred: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return True
            time.sleep(0.02)
        return pred(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
