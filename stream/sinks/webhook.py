"""Webhook sink (``--events https://HOST/PATH``, or ``http://`` on a trusted network): POSTs batches.

Each POST carries a JSON array of up to ``events.webhook.batch`` events in publish order, with
``Content-Type: application/json``, ``Idempotency-Key`` (a UUID5 over the batch's event ids: the same
on every retry of that batch) and, when ``events.webhook.token`` is set, ``Authorization: Bearer``.
Every event's own ``event_id`` is its idempotency key: a POS that deduplicates by it sees each event
once although delivery is at-least-once.

Delivery: ``publish`` puts the event in a bounded spool (``stream.sinks.spool``) and returns. One
sender thread posts the oldest batch and removes it only on a 2xx answer. A connection error, a
timeout, 408, 429 or 5xx is retried (the same batch, capped exponential backoff, ``Retry-After``
honoured up to ``events.retry_max_s``) for as long as it takes; the spool fills meanwhile and, when
full, drops its oldest events, counted and reported in a ``stream.gap`` event at the head of the next
batch. Any other 4xx means the server will never take that batch: it is dropped, counted as
``rejected`` and logged, so one bad batch cannot wedge delivery. With ``events.spool_dir`` the spool
is kept on disk too and what a run could not deliver is sent by the next.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

from stream.config import EventsConfig
from stream.events import encode
from stream.sinks.base import SinkError
from stream.sinks.spool import Backoff, Spool, SpooledSender, spool_path

log = logging.getLogger(__name__)

FORMS = "https://HOST[:PORT]/PATH (or http:// on a trusted network)"
_NAMESPACE = uuid.UUID("0b9c3f52-8d0e-5a51-9b7e-3c2f6e1d4a77")
RETRY_STATUS = frozenset({408, 425, 429})


def parse_webhook(spec: str) -> str:
    """Validate ``spec``; a bad one is a one-line SinkError."""
    parts = urlsplit(spec)
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise SinkError(f"bad event sink {spec!r}: bad port; expected {FORMS}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise SinkError(f"bad event sink {spec!r}: expected {FORMS}")
    return spec


class WebhookSink(SpooledSender):
    """POSTs every event to ``url`` in batches; never blocks the caller (see the module docstring)."""

    def __init__(self, url: str, cfg: EventsConfig, *, close_timeout_s: float | None = None) -> None:
        self.url = parse_webhook(url)
        self.batch = cfg.webhook.batch
        self.timeout_s = cfg.webhook.timeout_s
        spool = Spool(cfg.spool, "webhook", spool_path(cfg, "webhook", self.url))
        super().__init__(spool, cfg.drain_timeout_s if close_timeout_s is None else close_timeout_s)
        self._headers = {"Content-Type": "application/json", "User-Agent": "checkout-stream"}
        if cfg.webhook.token:
            self._headers["Authorization"] = f"Bearer {cfg.webhook.token}"
        self._backoff = Backoff(cfg.retry_initial_s, cfg.retry_max_s)
        self._retry_max_s = cfg.retry_max_s
        self.delivered = 0
        self.posts = 0
        self.failures = 0
        self.rejected = 0
        self.gaps = 0
        self.last_error = ""
        self._start("sink-webhook")

    def __str__(self) -> str:
        return f"webhook {self.url}"

    def _away(self) -> str:
        return self.last_error or "server away"

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self._spool.dropped,
            "spooled": len(self._spool),
            "posts": self.posts,
            "failures": self.failures,
            "rejected": self.rejected,
            "gaps": self.gaps,
            "undelivered": self.undelivered,
        }

    # -- the sender thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._spool.persist()
            batch = self._spool.peek(self.batch, 0.1)
            if not batch:
                continue
            events = [event for _, event in batch]
            body = ("[" + ",".join(encode(e) for e in events) + "]").encode()
            key = str(uuid.uuid5(_NAMESPACE, ",".join(str(e.get("event_id", e.get("from_seq"))) for e in events)))
            while not self._stop.is_set():  # the same batch until it is taken or refused for good
                outcome, wait = self._post(body, key)
                if outcome != "retry":
                    break
                self.failures += 1
                self._spool.persist()  # what arrived meanwhile reaches the disk during an outage too
                self._stop.wait(max(wait, self._backoff.next()))
            else:
                return  # stopped with the batch still spooled: counted as undelivered by close()
            self._backoff.reset()
            self._spool.ack(batch[-1][0])
            gaps = sum(ticket < 0 for ticket, _ in batch)
            self.gaps += gaps
            if outcome == "ok":
                self.delivered += len(batch) - gaps
            else:
                self.rejected += len(batch) - gaps
                log.error(
                    "webhook %s refused a batch for good (%s): %d events dropped", self.url, self.last_error, len(batch)
                )

    def _post(self, body: bytes, key: str) -> tuple[str, float]:
        """("ok" | "rejected" | "retry", seconds the server asked to wait)."""
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={**self._headers, "Idempotency-Key": key}
        )
        self.posts += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
            return "ok", 0.0
        except urllib.error.HTTPError as exc:
            self.last_error = f"HTTP {exc.code}"
            if exc.code in RETRY_STATUS or exc.code >= 500:
                return "retry", min(_retry_after(exc.headers.get("Retry-After")), self._retry_max_s)
            return "rejected", 0.0
        except (OSError, ValueError) as exc:  # refused, reset, timeout, TLS, DNS
            self.last_error = str(getattr(exc, "reason", exc))
            return "retry", 0.0


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: the backoff decides
