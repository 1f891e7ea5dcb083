"""Real live-source infrastructure for tests: a gst-rtsp-server subprocess on loopback.

The server runs under the system interpreter (/usr/bin/python3, GStreamer from Debian packages:
.ci/install-rtsp.sh); ``RTSP_MISSING`` says why it cannot run here (None when it can).
"""

from __future__ import annotations

import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
USER, PASSWORD = "cam", "pa:ss@w0rd"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), "ss%40w0rd", "w0rd")
SIZE = (320, 240)
FPS = 15


def _gst_rtsp_missing() -> str | None:
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer"
    )
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} unusable: {exc}"
    if done.returncode:
        return f"{SYSTEM_PYTHON} cannot import GstRtspServer (run .ci/install-rtsp.sh)"
    return None


RTSP_MISSING = _gst_rtsp_missing()


class RtspServer:
    """tests/rtsp_server.py as a subprocess; ``kill()`` + ``start()`` simulate an outage on one port."""

    def __init__(self, size: tuple[int, int] = SIZE, codec: str = "h264") -> None:
        self.port = 0
        self.size = size
        self.codec = codec
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> RtspServer:
        cmd = [
            SYSTEM_PYTHON,
            str(SERVER),
            "--port",
            str(self.port),
            "--fps",
            str(FPS),
            "--codec",
            self.codec,
            "--width",
            str(self.size[0]),
            "--height",
            str(self.size[1]),
            "--user",
            USER,
            "--password",
            PASSWORD,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.kill()
                raise RuntimeError(f"rtsp_server.py did not get ready within {timeout} s")
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self.kill()
            raise RuntimeError(f"rtsp_server.py failed to start: {line}")
        self.port = int(line[1])
        return self

    def url(self, port: int | None = None, password: str = PASSWORD) -> str:
        return f"rtsp://{USER}:{quote(password, safe='')}@127.0.0.1:{port or self.port}/test"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def wait_for(cond: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())
