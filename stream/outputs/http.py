"""The operations HTTP server of a lane (or several: ``?lane=NAME``): /healthz, /readyz, /metrics, /live,
/api/state, /api/frame.jpg, and ``POST /api/basket/close`` (the POS or an attendant ends a basket).

Why the standard library's ``ThreadingHTTPServer`` and not a framework: six GET routes and one POST
without a body, no templates and no async code elsewhere in the process; a framework would add a
dependency and an event loop for nothing. Prometheus exposition comes from ``prometheus_client`` (its encoder
and content negotiation), so the only hand-written parts are routing and the limits below.

Limits, so the server can never slow the frame loop or pile up work:
- it runs on its own threads; the loop only swaps references into the ``LiveView`` it reads;
- at most ``max_clients`` requests are served at once; more are answered 503 at once, unread;
- HTTP/1.0, one request per connection, no request bodies; a client that stalls longer than
  ``client_timeout_s`` while sending its request or receiving the answer is dropped;
- every answer is a bounded snapshot (one JPEG, the last N events, one scrape).

Auth: a bind that is not loopback needs ``token`` (``events.token``, as the TCP sink). When a token
is set, every route but the static page shell (/live, /live.js, which hold no data) requires
``Authorization: Bearer TOKEN``; the page reads the token from its URL fragment (``/live#token=...``,
never sent to the server or written to its logs) and sends it with each request.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from stream.config import ConfigError
from stream.outputs.live import Picture
from stream.sinks.tcp import is_loopback

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b'Retry-After: 1\r\n\r\n{"error": "busy: too many requests at once"}\n'
)
_PUBLIC = frozenset({"/", "/live", "/live.js"})
_POST = frozenset({"/api/basket/close"})
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' blob:; "
    "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def parse_bind(spec: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or a bare ``PORT`` (loopback) -> (host, port); port 0 picks one."""
    text = spec.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not port_text.isdigit() or int(port_text) > 65535 or not host or (":" in host and not bracketed):
        raise ConfigError(
            f"bad HTTP bind {spec!r}: expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, "
            "0.0.0.0:8080 with events.token) or a bare PORT for loopback"
        )
    return host, int(port_text)


class StateProvider(Protocol):
    """What the server reads; every call returns a snapshot and may come from any thread."""

    registry: CollectorRegistry

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...
    def state(self) -> dict[str, Any]: ...
    def picture(self) -> Picture | None: ...
    def close_basket(self) -> tuple[int, dict[str, Any]]: ...


# A provider may also route ``?lane=NAME`` (``stream.outputs.lane``): ``select(name)`` -> that lane's
# provider or None (404), ``lane_names()`` for the 404's list, and ``default_lane`` (several lanes: /live
# without ``?lane=`` is sent to the first).


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 32

    def __init__(self, addr: tuple[str, int], handler: type, owner: HttpServer) -> None:
        self.owner = owner
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.owner.slots.acquire(blocking=False):
            self.owner.refused += 1
            with contextlib.suppress(OSError):
                request.settimeout(0.2)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.owner.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished or stalled mid-answer is routine, not a traceback on stderr.
        log.debug("HTTP client %s dropped", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "checkout-stream"
    sys_version = ""

    def do_GET(self) -> None:
        self.server.owner.handle(self, head=False)

    def do_HEAD(self) -> None:
        self.server.owner.handle(self, head=True)

    def do_POST(self) -> None:
        self.server.owner.handle(self, head=False, post=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)


class HttpServer:
    """Serves one ``StateProvider`` on ``host:port`` (port 0 picks one: read ``.port``). ``start()``
    returns at once (the server has its own threads); ``close()`` stops it within a poll interval."""

    def __init__(
        self,
        host: str,
        port: int,
        provider: StateProvider,
        *,
        token: str = "",
        max_clients: int = 8,
        client_timeout_s: float = 2.0,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"refusing to serve HTTP on {host} without events.token: anyone who can reach the port could "
                "watch the counter. Set events.token (or CHECKOUT_STREAM_TOKEN) or bind 127.0.0.1"
            )
        self.provider = provider
        self._token = token.encode()
        self.slots = threading.BoundedSemaphore(max_clients)
        self.refused = 0
        self.started = time.monotonic()
        handler = type("Handler", (_Handler,), {"timeout": client_timeout_s})
        try:
            self._server = _Server((host, port), handler, self)
        except OSError as exc:
            raise OSError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"http:{self.port}", daemon=True
        )
        self._assets = {
            name: (resources.files("stream.outputs") / name).read_bytes() for name in ("live.html", "live.js")
        }

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("HTTP on %s: /healthz /readyz /metrics /live", self.url)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests (one of the server's threads) -------------------------------------------------
    def handle(self, req: _Handler, head: bool, post: bool = False) -> None:
        url = urlsplit(req.path)
        path = url.path
        if self._token and path not in _PUBLIC and not self._authorised(req.headers.get("Authorization", "")):
            self._json(
                req,
                401,
                {"error": "send the events token as 'Authorization: Bearer TOKEN'"},
                head,
                extra={"WWW-Authenticate": 'Bearer realm="checkout-stream"'},
            )
            return
        p = self._lane_provider(req, path, parse_qs(url.query).get("lane", [None])[0], head)
        if p is not None:
            self._route(req, p, path, head, post)

    def _route(self, req: _Handler, p: Any, path: str, head: bool, post: bool) -> None:
        if post != (path in _POST):
            allow = "POST" if path in _POST else "GET, HEAD"
            self._json(req, 405, {"error": f"{path} answers {allow}"}, head, extra={"Allow": allow})
        elif path == "/api/basket/close":
            code, body = p.close_basket()
            self._json(req, code, body, head)
        elif path == "/healthz":
            self._json(req, 200, {"status": "alive", "uptime_s": round(time.monotonic() - self.started, 3)}, head)
        elif path == "/readyz":
            ready, body = p.readiness()
            self._json(req, 200 if ready else 503, body, head)
        elif path == "/metrics":
            encoder, ctype = choose_encoder(req.headers.get("Accept", ""))
            self._send(req, 200, ctype, encoder(p.registry), head)
        elif path == "/api/state":
            self._json(req, 200, p.state(), head)
        elif path == "/api/frame.jpg":
            pic = p.picture()
            if pic is None:
                self._json(req, 503, {"error": "no frame yet"}, head, extra={"Retry-After": "1"})
            else:
                self._send(req, 200, "image/jpeg", pic.jpeg, head, extra={"X-Frame-Index": str(pic.frame_index)})
        elif path in ("/live", "/live.js"):
            ctype = "text/html; charset=utf-8" if path == "/live" else "text/javascript; charset=utf-8"
            asset = "live.js" if path == "/live.js" else "live.html"
            self._send(req, 200, ctype, self._assets[asset], head, extra={"Content-Security-Policy": _PAGE_CSP})
        elif path == "/":
            self._send(req, 302, "text/plain; charset=utf-8", b"see /live\n", head, extra={"Location": "/live"})
        else:
            self._json(
                req,
                404,
                {
                    "error": f"no such page {path}",
                    "pages": ["/healthz", "/readyz", "/metrics", "/live", "/api/state", "/api/frame.jpg"],
                    "post": sorted(_POST),
                },
                head,
            )

    def _lane_provider(self, req: _Handler, path: str, lane: str | None, head: bool) -> Any:
        """The provider for ``?lane=NAME`` (None once a 404 or the /live redirect is answered)."""
        p: Any = self.provider
        if lane is not None and path not in ("/live", "/live.js", "/metrics"):
            p = p.select(lane) if hasattr(p, "select") else None
            if p is None:
                names = self.provider.lane_names() if hasattr(self.provider, "lane_names") else []
                self._json(req, 404, {"error": f"no lane {lane!r}", "lanes": names}, head)
        elif path == "/live" and lane is None and getattr(p, "default_lane", None):
            # Several lanes on one server: the page shows one, named in its URL (the fragment is kept).
            where = f"/live?lane={quote(p.default_lane)}"
            self._send(req, 302, "text/plain; charset=utf-8", b"see /live?lane=NAME\n", head, extra={"Location": where})
            p = None
        return p

    def _authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    def _json(self, req: _Handler, code: int, body: Any, head: bool, *, extra: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, default=str, separators=(",", ":")) + "\n").encode()
        self._send(req, code, "application/json", data, head, extra=extra)

    @staticmethod
    def _send(
        req: _Handler, code: int, ctype: str, data: bytes, head: bool, *, extra: dict[str, str] | None = None
    ) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        req.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            req.send_header(key, value)
        req.end_headers()
        if not head:
            req.wfile.write(data)
