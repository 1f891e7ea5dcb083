"""The README's screenshot of /live: the product run on a real clip with --http, the page opened in
headless Chromium (tests/browser.py, Debian chromium + chromium-driver), one screenshot written as PNG.

    python3 benchmarks/live_screenshot.py [--clip ../shared/data/clips/car-detection.mp4] [--out docs/live.png]

The run is paced like a camera (--realtime); the screenshot is taken once the page shows a picture and
lists ``--items`` items (or ``--at`` seconds after the lane is ready). The PNG is scaled to
``--max-width`` and palette-reduced so it stays small (well under 300 KB).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2
import numpy as np

from tests.browser import BROWSER_MISSING, Browser


def start_run(clip: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``checkout-stream run CLIP --realtime --http 127.0.0.1:0``; its URL, read from its log."""
    cmd = [
        sys.executable,
        "-m",
        "stream",
        "run",
        str(clip),
        "--realtime",
        "--no-display",
        "--http",
        "127.0.0.1:0",
        "--events",
        "jsonl:" + str(log.with_suffix(".events.jsonl")),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"HTTP on (http://\S+):", log.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"live_screenshot: the run never served HTTP:\n{log.read_text()[-2000:]}")


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"live_screenshot: {url}/readyz never answered 200")


def small_png(image: np.ndarray, max_width: int, colours: int) -> bytes:
    """PNG of ``image`` scaled to ``max_width`` with at most ``colours`` colours (k-means palette)."""
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, round(h * max_width / w)), interpolation=cv2.INTER_AREA)
    pixels = image.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    rng = np.random.default_rng(0)
    sample = pixels[rng.choice(len(pixels), min(len(pixels), 40000), replace=False)]
    _, _, centres = cv2.kmeans(sample, colours, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    # Nearest centre per pixel, in chunks (memory stays small).
    labels = np.concatenate(
        [np.argmin(((chunk[:, None, :] - centres[None]) ** 2).sum(2), 1) for chunk in np.array_split(pixels, 64)]
    )
    quantised = centres.astype(np.uint8)[labels].reshape(image.shape)
    ok, buf = cv2.imencode(".png", quantised, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=REPO.parent / "shared" / "data" / "clips" / "car-detection.mp4")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "live.png")
    ap.add_argument("--at", type=float, default=20.0, metavar="S", help="at most this long after ready (20)")
    ap.add_argument("--items", type=int, default=2, help="screenshot once the page lists this many items (2)")
    ap.add_argument("--size", default="1100x700", help="browser window WxH (1100x700)")
    ap.add_argument("--max-width", type=int, default=1000)
    ap.add_argument("--colours", type=int, default=96)
    args = ap.parse_args()
    if BROWSER_MISSING:
        raise SystemExit(f"live_screenshot: {BROWSER_MISSING}")
    if not args.clip.is_file():
        raise SystemExit(f"live_screenshot: no clip at {args.clip}")
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_run(args.clip, Path(tmp) / "run.log")
        try:
            wait_ready(url)
            with Browser(Path(tmp) / "profile", size=(w, h)) as browser:
                browser.open(url + "/live")
                browser.wait_for("const i = document.getElementById('picture'); return i.naturalWidth > 0;")
                # The first moment the page lists --items items (or the end of --at seconds).
                deadline = time.monotonic() + args.at
                while time.monotonic() < deadline:
                    rows = browser.run("return document.getElementById('items').rows.length;")
                    if rows >= args.items:
                        time.sleep(0.6)  # the picture is polled apart from the state: let it catch up
                        break
                    time.sleep(0.2)
                shot = browser.screenshot()
                with urllib.request.urlopen(url + "/api/state", timeout=5) as r:
                    state = json.loads(r.read())
        finally:
            proc.terminate()
            proc.wait(30)
    png = small_png(shot, args.max_width, args.colours)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(
        f"{args.out}: {len(png) / 1024:.0f} KB, {shot.shape[1]}x{shot.shape[0]} screenshot of {url}/live; "
        f"frame {state['frame']['index']}, {len(state['items'])} items, {len(state['events'])} events shown"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
