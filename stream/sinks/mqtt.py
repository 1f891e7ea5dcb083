"""MQTT sink (``--events mqtt://HOST[:PORT][/PREFIX]``, ``mqtts://`` for TLS): paho-mqtt, QoS 1.

Topics, with PREFIX ``checkout-stream`` unless the spec names one and ``<lane>`` each event's lane:
- ``PREFIX/<lane>/events/<family>``: every event, one topic per family (``item``, ``basket``,
  ``source``, ``run``, ``stream``), in order, QoS 1, the compact JSON line as payload.
- ``PREFIX/<lane>/basket`` (retained, QoS 1): the current basket ``{lane, basket_id, open, receipt,
  seq}``, replayed from the basket events (``stream.baskets.apply``) and republished after each one,
  so a POS that connects late reads the open basket at once.

Delivery: ``publish`` puts the event in a bounded spool (``stream.sinks.spool``) and returns; one
sender thread publishes batches when the broker is connected and removes events from the spool only
after the broker's PUBACK. paho reconnects with capped exponential backoff (``events.retry_*``), so a
broker outage only fills the spool; it is sent on reconnect (a batch cut short is sent again whole:
at-least-once, deduplicate by ``event_id``). A full spool drops its oldest events, counted and
reported as a ``stream.gap`` event on ``PREFIX/<lane>/events/stream``. A dead broker is never the
end of the run. Credentials and TLS come from ``events.mqtt``; with ``events.spool_dir`` the spool
is kept on disk too and what a run could not deliver is sent by the next.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from stream.baskets import Line, apply, receipt_of
from stream.config import EventsConfig
from stream.events import encode
from stream.sinks.base import SinkError
from stream.sinks.spool import Spool, SpooledSender, spool_path

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "checkout-stream"
FORMS = "mqtt://HOST[:PORT][/PREFIX] (e.g. mqtt://127.0.0.1:1883/store-7), mqtts:// for TLS"
ACK_TIMEOUT_S = 10.0  # a batch not acknowledged in this long is sent again


def parse_mqtt(spec: str) -> tuple[str, int, str, bool]:
    """``mqtt://HOST[:PORT][/PREFIX]`` -> (host, port, prefix, tls); a bad spec is a one-line SinkError."""
    parts = urlsplit(spec)
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError:
        port = -1
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    bad = parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port == -1 or parts.query
    if bad or "#" in spec or "+" in prefix or "//" in prefix:
        raise SinkError(f"bad event sink {spec!r}: expected {FORMS}")
    return parts.hostname, port or (8883 if tls else 1883), prefix, tls  # type: ignore[return-value]


class MqttSink(SpooledSender):
    """Publishes every event to an MQTT broker; never blocks the caller (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        cfg: EventsConfig,
        prefix: str = DEFAULT_PREFIX,
        *,
        tls: bool = False,
        batch: int = 100,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        close_timeout_s: float | None = None,
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix.strip("/")
        self.batch = batch
        self.ack_timeout_s = ack_timeout_s
        spool = Spool(cfg.spool, "mqtt", spool_path(cfg, "mqtt", f"{host}:{port}/{self.prefix}"))
        super().__init__(spool, cfg.drain_timeout_s if close_timeout_s is None else close_timeout_s)
        self._connected = threading.Event()
        self._acks: set[int] = set()
        self._ack_cond = threading.Condition()
        self._baskets: dict[str, tuple[str | None, dict[int, Line]]] = {}  # lane -> current basket
        self.delivered = 0
        self.resent = 0
        self.connects = 0
        self.gaps = 0
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"checkout-stream-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(batch + 8)
        # Typed int, but paho only doubles and sleeps them: sub-second delays work and matter on a LAN.
        client.reconnect_delay_set(cfg.retry_initial_s, cfg.retry_max_s)  # type: ignore[arg-type]
        if cfg.mqtt.username:
            client.username_pw_set(cfg.mqtt.username, cfg.mqtt.password or None)
        if tls or cfg.mqtt.tls:
            try:
                client.tls_set(ca_certs=cfg.mqtt.ca_file or None)
            except (OSError, ValueError) as exc:
                raise SinkError(f"MQTT sink: cannot set up TLS with CA {cfg.mqtt.ca_file!r}: {exc}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(host, port, keepalive=cfg.mqtt.keepalive_s)
        client.loop_start()  # paho's network thread: connects, reconnects with backoff, reads acks
        self._start("sink-mqtt")

    def __str__(self) -> str:
        return f"MQTT sink {self.host}:{self.port}"

    def _away(self) -> str:
        return "broker away"

    def close(self) -> None:
        """Drain as every spooled sink does (``SpooledSender.close``), then disconnect."""
        closing = self._closing
        super().close()
        if not closing:
            self._client.disconnect()
            self._client.loop_stop()

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self._spool.dropped,
            "spooled": len(self._spool),
            "resent": self.resent,
            "connects": self.connects,
            "gaps": self.gaps,
            "connected": self._connected.is_set(),
            "undelivered": self.undelivered,
        }

    def topic(self, event: dict[str, Any]) -> str:
        family = str(event.get("type", "unknown")).split(".", 1)[0]
        return f"{self.prefix}/{event.get('lane', 'default')}/events/{family}"

    # -- paho's network thread ---------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self.connects += 1
        if self.connects > 1:
            log.info("MQTT broker %s:%d back; sending %d spooled events", self.host, self.port, len(self._spool))
        self._connected.set()
        self._spool.wake()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("MQTT broker %s:%d lost (%s); spooling, reconnecting", self.host, self.port, reason)
        self._connected.clear()
        with self._ack_cond:
            self._ack_cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._ack_cond:
            self._acks.add(mid)
            self._ack_cond.notify_all()

    # -- the sender thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._spool.persist()
            if not self._connected.wait(0.05):
                continue
            batch = self._spool.peek(self.batch, 0.05)
            if not batch:
                continue
            try:
                ok = self._send([event for _, event in batch])
            except Exception:  # a bug here must not kill delivery for the rest of the run
                log.exception("MQTT sink: sending a batch failed")
                ok = False
            if ok:
                self._spool.ack(batch[-1][0])
                gaps = sum(ticket < 0 for ticket, _ in batch)
                self.gaps += gaps
                self.delivered += len(batch) - gaps
            else:
                self.resent += len(batch)
                self._stop.wait(0.05)

    def _send(self, events: list[dict[str, Any]]) -> bool:
        """Publish ``events`` (and the retained basket after each basket event); True once the broker
        acknowledged every one, False when the connection dropped or the acks did not come in time."""
        with self._ack_cond:
            self._acks.clear()
        mids = []
        for event in events:
            messages = [(self.topic(event), encode(event), False)]
            if str(event.get("type", "")).startswith("basket."):
                messages.append(self._basket_message(event))
            for topic, payload, retain in messages:
                info = self._client.publish(topic, payload, qos=1, retain=retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return False
                mids.append(info.mid)
        deadline = time.monotonic() + self.ack_timeout_s
        with self._ack_cond:
            while not self._acks.issuperset(mids):
                left = deadline - time.monotonic()
                if left <= 0 or not self._connected.is_set() or self._stop.is_set():
                    return False
                self._ack_cond.wait(min(left, 0.1))
        return True

    def _basket_message(self, event: dict[str, Any]) -> tuple[str, str, bool]:
        lane = str(event.get("lane", "default"))
        basket_id, lines = self._baskets.get(lane, (None, {}))
        if event["type"] == "basket.opened" or event.get("basket_id") != basket_id:
            basket_id, lines = event.get("basket_id"), {}
        apply(lines, event)
        closed = event["type"] == "basket.closed"
        self._baskets[lane] = (basket_id, lines)
        state = {
            "lane": lane,
            "basket_id": basket_id,
            "open": not closed,
            "receipt": event["receipt"] if closed else receipt_of(lines),
            "seq": event.get("seq"),
        }
        return f"{self.prefix}/{lane}/basket", encode(state), True
