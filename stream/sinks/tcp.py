"""The TCP event sink: a loopback (or token-protected) server that streams JSON lines to many clients.

One server thread owns every socket, the replay ring and every client buffer, so ordering and replay
need no locks: ``publish`` appends to a bounded hand-off deque and, only when the thread sleeps,
writes one byte to wake it. Everything else (encoding, fan-out, sending) happens on that thread.

Protocol, client side: connect, optionally send one line ``{"resume_after": SEQ, "token": "..."}``
(or an empty line, or nothing for ~0.2 s, meaning "no replay"), then read lines. A resuming client
gets every event with seq > SEQ still in the ring, preceded by one ``stream.gap`` marker for those no
longer held, then live events, in order and without duplicates. A client whose buffer exceeds
``client_buffer`` events is disconnected and counted; it never slows ``publish``.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import json
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any

from stream.config import EventsConfig
from stream.events import encode, gap_marker
from stream.sinks.base import SinkError

log = logging.getLogger(__name__)

_HELLO_MAX_BYTES = 4096
_SEND_CHUNK = 1 << 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname other than localhost could resolve anywhere


class _Client:
    __slots__ = ("addr", "connect_seq", "deadline", "extra", "inbuf", "out", "partial", "sock", "live", "writing")

    def __init__(self, sock: socket.socket, addr: str, connect_seq: int, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.connect_seq = connect_seq  # last seq published when it connected
        self.deadline = deadline  # hello must arrive by then
        self.inbuf = bytearray()
        self.out: deque[bytes] = deque()
        self.partial = b""  # the unsent tail of the last chunk
        self.extra = 0  # replay backlog still allowed above the buffer cap
        self.live = False
        self.writing = False  # registered for EVENT_WRITE


class TcpSink:
    """Streams events to TCP clients; see the module docstring for the protocol.

    ``port`` 0 picks a free port (read it back from ``.port``). A non-loopback ``host`` requires
    ``cfg.token``; when a token is set every client must present it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        cfg: EventsConfig,
        *,
        hello_timeout_s: float = 0.2,
        auth_timeout_s: float = 2.0,
        flush_timeout_s: float = 1.0,
        sndbuf: int | None = 1 << 17,
        max_pending: int = 1 << 16,
    ) -> None:
        if not is_loopback(host) and not cfg.token:
            raise SinkError(
                f"refusing to listen on {host} without events.token: anyone who can reach the port "
                "could read the events. Set events.token (clients send it first) or bind 127.0.0.1"
            )
        self._token = cfg.token.encode()
        self._cap = cfg.client_buffer
        self._hello_s = auth_timeout_s if cfg.token else hello_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._sndbuf = sndbuf
        self._max_pending = max_pending
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family, backlog=64)
        except OSError as exc:
            raise SinkError(
                f"cannot listen for event clients on {host}:{port}: {exc.strerror}; "
                "pick another port (0 = any free one)"
            ) from None
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")

        self._pending: deque[dict[str, Any]] = deque()
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=cfg.replay_ring)
        self._last_seq = 0
        self._clients: dict[int, _Client] = {}
        self._sleeping = False
        self._stopping = False
        self._closed = False
        # Counters: published/dropped are touched by the publisher only, the rest by the server thread.
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self.clients_accepted = 0
        self.clients_cut = 0
        self.clients_rejected = 0
        self.replayed = 0
        self.gaps = 0
        self._thread = threading.Thread(target=self._run, name=f"sink-tcp-{self.port}", daemon=True)
        self._thread.start()
        log.info("event clients may connect to %s:%d", host, self.port)

    # -- publisher side -------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        if self._closed or len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(event)
        self.published += 1
        if self._sleeping:
            self._sleeping = False
            with contextlib.suppress(OSError):  # a full wake pipe already means "wake up"
                self._wake_w.send(b"\0")

    def close(self) -> None:
        """Send what is queued (within ``flush_timeout_s``), then disconnect everyone."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(self._flush_timeout_s + 2.0)
        if self._thread.is_alive():
            log.warning("event server on port %d did not stop in time", self.port)

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "errors": self.errors,
            "clients": len(self._clients),
            "clients_accepted": self.clients_accepted,
            "clients_cut": self.clients_cut,
            "clients_rejected": self.clients_rejected,
            "replayed": self.replayed,
            "gaps": self.gaps,
        }

    # -- server thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._step()
            self._drain()
            self._final_flush()
        except Exception:
            log.exception("event server on port %d failed; event clients are disconnected", self.port)
        finally:
            for client in list(self._clients.values()):
                self._drop(client, None)
            self._sel.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()

    def _step(self) -> None:
        hellos = [c.deadline for c in self._clients.values() if not c.live]
        timeout = max(0.0, min(hellos) - time.monotonic()) if hellos else None
        self._sleeping = True
        if self._pending or self._stopping:
            timeout = 0.0
        ready = self._sel.select(timeout)
        self._sleeping = False
        for key, mask in ready:
            if key.data == "accept":
                self._accept()
            elif key.data == "wake":
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                client: _Client = key.data
                if mask & selectors.EVENT_READ and client.sock.fileno() in self._clients:
                    self._on_readable(client)
                if mask & selectors.EVENT_WRITE and client.sock.fileno() in self._clients:
                    self._send(client)
        self._drain()
        now = time.monotonic()
        for client in [c for c in self._clients.values() if not c.live and c.deadline <= now]:
            if self._token:
                self._reject(client, "sent no token in time")
            else:
                self._go_live(client, None)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                log.warning("event server: accept failed: %s", exc)
                return
            sock.setblocking(False)
            if self._sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, f"{addr[0]}:{addr[1]}", self._last_seq, time.monotonic() + self._hello_s)
            self._clients[sock.fileno()] = client
            self._sel.register(sock, selectors.EVENT_READ, client)
            self.clients_accepted += 1

    def _on_readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client, "disconnected" if client.live else None)
            return
        if client.live:
            return  # clients have nothing more to say; ignore
        client.inbuf += data
        line, sep, _ = client.inbuf.partition(b"\n")
        if not sep:
            if len(client.inbuf) > _HELLO_MAX_BYTES:
                self._reject(client, f"sent more than {_HELLO_MAX_BYTES} bytes without a newline")
            return
        self._hello(client, bytes(line))

    def _hello(self, client: _Client, line: bytes) -> None:
        hello: Any = {}
        if line.strip():
            try:
                hello = json.loads(line)
            except ValueError:
                hello = None
        resume = hello.get("resume_after") if isinstance(hello, dict) else None
        if not isinstance(hello, dict) or not (
            resume is None or (isinstance(resume, int) and not isinstance(resume, bool) and resume >= 0)
        ):
            self._reject(
                client, 'sent a bad first line; expected {"resume_after": SEQ, "token": "..."} or an empty line'
            )
            return
        if self._token:
            token = hello.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
                self._reject(client, "presented a missing or wrong token")
                return
        self._go_live(client, resume)

    def _go_live(self, client: _Client, resume_after: int | None) -> None:
        after = client.connect_seq if resume_after is None else resume_after
        backlog: list[bytes] = []
        if after < self._last_seq:
            first_held = self._ring[0][0] if self._ring else self._last_seq + 1
            if resume_after is not None and after + 1 < first_held:
                backlog.append((encode(gap_marker(after + 1, first_held - 1)) + "\n").encode())
                self.gaps += 1
            start = after + 1 - first_held
            if start >= 0 and start < len(self._ring) and self._ring[start][0] == after + 1:
                held = [line for _, line in itertools.islice(self._ring, start, None)]
            else:
                held = [line for seq, line in self._ring if seq > after]
            self.replayed += len(held)
            backlog += held
        client.live = True
        client.inbuf.clear()
        client.out.extend(backlog)
        client.extra = len(backlog)
        log.info(
            "event client %s connected (resume_after=%s, %d lines of backlog)", client.addr, resume_after, len(backlog)
        )
        self._send(client)

    def _drain(self) -> None:
        clients = [c for c in self._clients.values() if c.live]
        while self._pending:
            for _ in range(min(len(self._pending), 256)):
                event = self._pending.popleft()
                try:
                    line = (encode(event) + "\n").encode()
                except (TypeError, ValueError) as exc:
                    self.errors += 1
                    log.error("dropping an event that cannot be encoded as JSON: %s", exc)
                    continue
                seq = event.get("seq")
                if isinstance(seq, int):
                    self._ring.append((seq, line))
                    self._last_seq = seq
                for client in clients:
                    client.out.append(line)
            for client in clients:
                if client.out:
                    self._send(client)  # first let the kernel take what it can
                if len(client.out) > self._cap + client.extra:
                    self.clients_cut += 1
                    self._drop(client, f"fell behind by more than {self._cap} events; disconnected")
            clients = [c for c in clients if c.sock.fileno() in self._clients]

    def _send(self, client: _Client) -> None:
        while client.partial or client.out:
            if not client.partial:
                parts, size = [], 0
                while client.out and size < _SEND_CHUNK:
                    parts.append(client.out.popleft())
                    size += len(parts[-1])
                client.extra = max(0, client.extra - len(parts))
                client.partial = b"".join(parts)
            try:
                n = client.sock.send(client.partial)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._drop(client, "disconnected")
                return
            client.partial = client.partial[n:]
            if client.partial:
                break
        want_write = bool(client.partial or client.out)
        if want_write != client.writing:
            client.writing = want_write
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._sel.modify(client.sock, mask, client)

    def _final_flush(self) -> None:
        deadline = time.monotonic() + self._flush_timeout_s
        for client in [c for c in self._clients.values() if not c.live]:
            self._on_readable(client)  # a hello already sent still counts
            if not client.live:
                self._drop(client, None)
        while any(c.writing for c in self._clients.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "event server: %d clients still had unsent events at shutdown",
                    sum(c.writing for c in self._clients.values()),
                )
                return
            for key, mask in self._sel.select(left):
                if isinstance(key.data, _Client) and mask & selectors.EVENT_WRITE:
                    self._send(key.data)

    def _reject(self, client: _Client, why: str) -> None:
        self.clients_rejected += 1
        self._drop(client, f"rejected: {why}")

    def _drop(self, client: _Client, why: str | None) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is None:
            return
        if why:
            level = logging.INFO if why == "disconnected" else logging.WARNING
            log.log(level, "event client %s %s", client.addr, why)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client.sock)
        client.sock.close()
