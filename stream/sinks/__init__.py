"""Where events go: stdout, a JSON Lines file, a TCP socket, an MQTT broker, a webhook. ``make_sinks``
builds them from specs; ``SinkSet`` fans each event out to all of them. Sinks never block the loop
(``stream.sinks.base``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from stream.config import EventsConfig
from stream.sinks.base import MemorySink, Sink, SinkError
from stream.sinks.lines import JsonlFileSink, StdoutSink
from stream.sinks.mqtt import MqttSink, parse_mqtt
from stream.sinks.tcp import TcpSink
from stream.sinks.webhook import WebhookSink, parse_webhook

__all__ = [
    "JsonlFileSink",
    "MemorySink",
    "MqttSink",
    "Sink",
    "SinkError",
    "SinkSet",
    "StdoutSink",
    "TcpSink",
    "WebhookSink",
    "make_sinks",
]

log = logging.getLogger(__name__)

SPEC_FORMS = (
    "stdout, tcp://HOST:PORT (e.g. tcp://127.0.0.1:9000; port 0 picks one), jsonl:PATH, "
    "mqtt://HOST[:PORT][/PREFIX] (mqtts:// for TLS), https://HOST/PATH (webhook; http:// too)"
)


def _parse_tcp(spec: str) -> tuple[str, int]:
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise SinkError(f"bad event sink {spec!r}: expected tcp://HOST:PORT; valid forms: {SPEC_FORMS}")
    return parts.hostname, port


Builder = Callable[[], Sink]


def _stdout(spec: str, cfg: EventsConfig) -> Builder:
    if spec != "stdout":
        raise SinkError(f"unknown event sink {spec!r}; valid forms: {SPEC_FORMS}")
    return lambda: StdoutSink(max_queue=max(cfg.client_buffer, 1024))


def _tcp(spec: str, cfg: EventsConfig) -> Builder:
    host, port = _parse_tcp(spec)
    return lambda: TcpSink(host, port, cfg)


def _jsonl(spec: str, cfg: EventsConfig) -> Builder:
    path = spec[len("jsonl:") :]
    if not path:
        raise SinkError(f"unknown event sink {spec!r}; valid forms: {SPEC_FORMS}")
    return lambda: JsonlFileSink(path)


def _mqtt(spec: str, cfg: EventsConfig) -> Builder:
    host, port, prefix, tls = parse_mqtt(spec)
    return lambda: MqttSink(host, port, cfg, prefix, tls=tls)


def _webhook(spec: str, cfg: EventsConfig) -> Builder:
    url = parse_webhook(spec)
    return lambda: WebhookSink(url, cfg)


# How a spec starts -> its parser, which validates it and returns the sink's builder.
SINK_FORMS: tuple[tuple[str, Callable[[str, EventsConfig], Builder]], ...] = (
    ("stdout", _stdout),
    ("tcp://", _tcp),
    ("jsonl:", _jsonl),
    ("mqtt://", _mqtt),
    ("mqtts://", _mqtt),
    ("http://", _webhook),
    ("https://", _webhook),
)


def make_sinks(specs: Sequence[str], cfg: EventsConfig) -> list[Sink]:
    """Build one sink per spec ("stdout", "tcp://HOST:PORT", "jsonl:PATH", "mqtt://HOST[:PORT][/PREFIX]",
    "https://HOST/PATH"), all validated first."""
    builders: list[Builder] = []
    for spec in specs:
        parse = next((fn for start, fn in SINK_FORMS if spec.startswith(start)), None)
        if parse is None:
            raise SinkError(f"unknown event sink {spec!r}; valid forms: {SPEC_FORMS}")
        builders.append(parse(spec, cfg))
    sinks: list[Sink] = []
    try:
        for build in builders:
            sinks.append(build())
    except Exception:
        for sink in sinks:
            sink.close()
        raise
    return sinks


class SinkSet:
    """Fans each event out to several sinks; one failing sink never stops the others."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)
        # TCP sinks first: waking their server thread is a system call that releases the GIL, and
        # line writers woken just before would grab it then, stalling this publish for their whole
        # batch (measured: p99 178 -> 55 us in benchmarks/bench_sinks.py).
        self._order = sorted(self.sinks, key=lambda s: not isinstance(s, TcpSink))
        self.published = 0
        self.errors = 0

    def publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        for sink in self._order:
            try:
                sink.publish(event)
            except Exception:  # a sink bug must not take the pipeline down
                self.errors += 1
                if self.errors == 1:
                    log.exception("event sink %s failed to publish", type(sink).__name__)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("event sink %s failed to close", type(sink).__name__)

    def stats(self) -> dict[str, Any]:
        """{"published", "errors", "dropped", "clients_cut", "sinks": [per-sink stats]}."""
        per = []
        for sink in self.sinks:
            per.append({"sink": type(sink).__name__, **sink.stats()})
        return {
            "published": self.published,
            "errors": self.errors,
            "dropped": sum(int(s.get("dropped", 0)) for s in per),
            "clients_cut": sum(int(s.get("clients_cut", 0)) for s in per),
            "sinks": per,
        }
