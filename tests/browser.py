"""A real headless Chromium for tests, driven through chromedriver's W3C WebDriver HTTP API with the
standard library only (no selenium, nothing downloaded): Debian's ``chromium`` and ``chromium-driver``
packages (.ci/install-browser.sh). ``BROWSER_MISSING`` says why it cannot run here (None when it can).

Each ``Browser`` gets a fresh profile folder and the flags that keep Chromium off the network apart
from the pages it is sent to.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_MISSING = (
    None
    if CHROMIUM and CHROMEDRIVER
    else "chromium or chromedriver is not installed (run .ci/install-browser.sh: Debian chromium chromium-driver)"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process and one Chromium session; ``close()`` ends both."""

    def __init__(self, profile: Path, size: tuple[int, int] = (1100, 700), timeout: float = 30.0) -> None:
        assert CHROMIUM and CHROMEDRIVER, BROWSER_MISSING
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.session = ""
        try:
            self._wait_ready(timeout)
            args = [*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
            caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
            self.session = self._call("POST", "/session", caps, timeout)["sessionId"]
        except Exception:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.05)

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webdriver {method} {path}: {exc.read()[:300]!r}") from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def open(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """The value ``script`` (a function body) returns in the page."""
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.run(script)):
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied: {script}")
            time.sleep(0.1)
        return value

    def screenshot(self) -> np.ndarray:
        """The viewport as a BGR image (the PNG Chromium rendered, decoded)."""
        png = base64.b64decode(self._call("GET", self._s("/screenshot")))
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def rect(self, css: str) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of the first element matching ``css``, in viewport pixels."""
        r = self.run(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return [r.left, r.top, r.right, r.bottom];",
            css,
        )
        x1, y1, x2, y2 = (round(v) for v in r)
        return x1, y1, x2, y2

    def close(self) -> None:
        if self.session:
            with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
                self._call("DELETE", self._s(""), timeout=10)
            self.session = ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
