"""What the live view costs the frame loop: the same real clip run without HTTP, with --http and nobody
watching, with a client fetching what /live fetches, and with /live open in headless Chromium, side by
side in one benchmark run.

    python3 benchmarks/bench_live.py [--clip ../shared/data/clips/car-detection.mp4] [--repeats 1]

Each arm runs the product's CLI (``run CLIP --no-display``), paced like a camera (``--realtime``: frame
age and drops are the figures) and offline (as fast as it goes: fps is the figure); figures come from
the run's own ``run.summary`` event. The polling client measures what serving a viewer costs the
product; Chromium runs on the same machine, so its decoding and drawing compete for the same cores:
an upper bound on the cost of a viewer on another machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.config import load_config
from tests.browser import BROWSER_MISSING, Browser

ARMS = ("no http", "http, nobody watching", "http + a client polling like /live", "http + /live in Chromium")


class Poller(threading.Thread):
    """What the page asks for, without a browser: /api/frame.jpg at ``fps`` and /api/state at 2 Hz."""

    def __init__(self, url: str, fps: float) -> None:
        super().__init__(daemon=True)
        self.url, self.fps, self.stop, self.frames = url, fps, threading.Event(), 0

    def run(self) -> None:
        next_state = 0.0
        while not self.stop.is_set():
            t0 = time.monotonic()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/api/frame.jpg", timeout=2) as r:
                    self.frames += bool(r.read())
                if t0 >= next_state:
                    with urllib.request.urlopen(self.url + "/api/state", timeout=2) as r:
                        r.read()
                    next_state = t0 + 0.5
            self.stop.wait(max(0.0, 1.0 / self.fps - (time.monotonic() - t0)))


def _url(proc: subprocess.Popen, log: Path) -> str:
    while proc.poll() is None:
        m = re.search(r"HTTP on (http://\S+):", log.read_text())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise SystemExit(f"bench_live: no HTTP:\n{log.read_text()[-2000:]}")


def run_arm(clip: Path, arm: str, realtime: bool, tmp: Path, live_fps: float) -> dict[str, Any]:
    events = tmp / f"events-{time.monotonic_ns()}.jsonl"
    log = tmp / "run.log"
    cmd = [sys.executable, "-m", "stream", "run", str(clip), "--no-display", "--events", f"jsonl:{events}"]
    if realtime:
        cmd.append("--realtime")
    if arm != ARMS[0]:
        cmd += ["--http", "127.0.0.1:0"]
    # Chromium starts before the run, so its own start-up is not charged to the frames.
    browser = Browser(tmp / f"profile-{time.monotonic_ns()}") if arm == ARMS[3] else None
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    poller = None
    jpegs = 0
    try:
        url = _url(proc, log) if arm != ARMS[0] else ""
        if browser is not None:
            browser.open(url + "/live")
        if arm == ARMS[2]:
            poller = Poller(url, live_fps)
            poller.start()
        while proc.poll() is None:
            if url:
                jpegs = max(jpegs, _encoded(url))
            time.sleep(0.5)
    finally:
        if poller is not None:
            poller.stop.set()
        if browser is not None:
            browser.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)
    summary = [json.loads(line) for line in events.read_text().splitlines() if '"run.summary"' in line]
    if proc.returncode or not summary:
        raise SystemExit(f"bench_live: the run failed (rc {proc.returncode}):\n{log.read_text()[-2000:]}")
    s = summary[-1]["summary"]
    return {
        "arm": arm,
        "realtime": realtime,
        "fps": s["fps"],
        "frames_processed": s["frames_processed"],
        "frames_dropped": s["frames_dropped"],
        "age_p50_ms": s["frame_age_ms"]["p50"],
        "age_p99_ms": s["frame_age_ms"]["p99"],
        "overlay_p50_ms": s["stage_ms"]["overlay"]["p50"],
        "live_jpegs": jpegs,
    }


def _encoded(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
            m = re.search(rb"checkout_stream_live_frames_encoded_total\{[^}]*\} ([0-9.e+]+)", r.read())
            return int(float(m.group(1))) if m else 0
    except OSError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=REPO.parent / "shared" / "data" / "clips" / "car-detection.mp4")
    ap.add_argument("--repeats", type=int, default=1, help="runs per arm and mode, interleaved (1)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "live_view.json")
    args = ap.parse_args()
    if BROWSER_MISSING:
        raise SystemExit(f"bench_live: {BROWSER_MISSING}")
    live_fps = load_config().http.live_fps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for realtime in (True, False):
            for _ in range(args.repeats):
                for arm in ARMS:
                    rows.append(run_arm(args.clip, arm, realtime, Path(tmp), live_fps))
                    r = rows[-1]
                    print(
                        f"{'paced' if realtime else 'offline':<8}{arm:<38}{r['fps']:>7.1f} fps  age p50 "
                        f"{r['age_p50_ms']:>6.1f} p99 {r['age_p99_ms']:>6.1f} ms  dropped {r['frames_dropped']:>3}  "
                        f"jpegs {r['live_jpegs']}",
                        flush=True,
                    )
    result = {
        "clip": str(args.clip.name),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
