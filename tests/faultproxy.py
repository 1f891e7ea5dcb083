"""A small fault-injecting TCP proxy on loopback, for network-source tests.

    proxy = FaultProxy(("127.0.0.1", server_port)).start()
    url = f"rtsp://127.0.0.1:{proxy.port}/test"
    proxy.set_mode("stall")   # pass | stall | cut | refuse | corrupt, switchable at run time

Modes (for the connections that exist and the ones that come):
- pass: forward both ways.
- stall: keep every socket open but forward nothing (a hung camera); new clients are accepted and
  then hear nothing.
- cut: shut down every connection now; new clients are accepted and closed at once.
- refuse: stop listening, so connecting fails with "connection refused" (the port is re-bound when
  the mode changes back).
- corrupt: forward, but flip bytes in what the server sends (every ``corrupt_every``-th chunk).

RTSP over TCP interleaves the media on the control connection, so one proxy covers the whole
session. Sockets are shut down before closing: closing alone does not wake a thread blocked in
``recv()``.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time

MODES = ("pass", "stall", "cut", "refuse", "corrupt")
_POLL_S = 0.05
_CHUNK = 65536


def _kill(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(
        self, target: tuple[str, int], mode: str = "pass", port: int = 0, corrupt_every: int = 5, seed: int = 0
    ) -> None:
        self.target = target
        self.port = port
        self.corrupt_every = corrupt_every
        self.connections = 0  # accepted client connections, for tests
        self.corrupted = 0  # bytes flipped so far, so a test can tell the fault really happened
        self._mode = self._check(mode)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._chunks = 0

    @staticmethod
    def _check(mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; valid: {', '.join(MODES)}")
        return mode

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> FaultProxy:
        self._running = True
        if self._mode != "refuse":
            self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        mode = self._check(mode)
        with self._lock:
            self._mode = mode
            doomed = list(self._socks) if mode in ("cut", "refuse") else []
            if mode == "refuse" and self._listener is not None:
                _kill(self._listener)
                self._listener = None
        for sock in doomed:
            _kill(sock)
        if mode != "refuse" and self._listener is None:
            self._listen()

    def close(self) -> None:
        self._running = False
        with self._lock:
            socks, self._socks = list(self._socks), []
            listener, self._listener = self._listener, None
        for sock in [*socks, *([listener] if listener else [])]:
            _kill(sock)
        if self._thread is not None:
            self._thread.join(2.0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Re-binding right after "refuse" can race the old socket's teardown; retry briefly.
        for _ in range(40):
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        sock.settimeout(_POLL_S)
        self.port = sock.getsockname()[1]
        with self._lock:
            self._listener = sock

    def _accept_loop(self) -> None:
        while self._running:
            listener = self._listener
            if listener is None:
                time.sleep(_POLL_S)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            if self._mode == "cut":
                _kill(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._socks.append(client)
        # A client that arrives during a stall hangs before the upstream is even contacted.
        while self._running and self._mode == "stall":
            time.sleep(_POLL_S)
        try:
            upstream = socket.create_connection(self.target, timeout=2.0)
        except OSError:
            _kill(client)
            return
        with self._lock:
            self._socks.append(upstream)
        for src, dst, down in ((client, upstream, False), (upstream, client, True)):
            threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            src.settimeout(_POLL_S)  # inside the try: a "cut" may have closed the socket already
            while self._running:
                if self._mode == "stall":
                    time.sleep(_POLL_S)  # read nothing: the sender's buffers fill, like a hung link
                    continue
                try:
                    data = src.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                if self._mode == "stall":
                    continue  # what was in flight when the stall began is lost
                if downstream and self._mode == "corrupt":
                    data = self._corrupt(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _kill(src)
            _kill(dst)

    def _corrupt(self, data: bytes) -> bytes:
        self._chunks += 1
        if self._chunks % self.corrupt_every or len(data) < 64:
            return data
        buf = bytearray(data)
        # Spare the first bytes of the chunk, which often hold RTSP interleave framing: corrupting the
        # payload exercises the decoder, not only the demuxer.
        for _ in range(max(1, len(buf) // 500)):
            pos = self._rng.randrange(16, len(buf))
            buf[pos] ^= 0xFF
            self.corrupted += 1
        return bytes(buf)
