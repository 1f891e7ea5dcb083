"""End-to-end throughput and latency of the whole pipeline on this machine's CPU.

What it measures, all in one run on the same 640x480 H.264 file (a rendered checkout scene, so the
segmenter, tracker and classifier have real work) with the shipped models and the demo catalog:

1. offline, threaded runtime: frames/s end to end (decode -> events), per-stage p50;
2. offline, the same stages one after another in one thread: frames/s, and the ratio to (1);
3. paced at 30 fps (the file behaves like a camera): frame age at emission p50/p99 (capture ->
   the frame's events published), and the age_ms of the item events themselves;
4. paced at 30 fps with the segment stage slowed by ``--slow-ms``: frame age stays bounded and the
   dropped frames are counted.

Usage: python3 benchmarks/bench_pipeline.py [--seconds 20] [--slow-ms 60]
Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import faiss
import numba
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.app import build_runtime, catalog_item_crop
from stream.config import load_config
from stream.sinks import MemorySink
from stream.sources.demo import demo_photos
from stream.sources.file import open_source
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder
from stream.stages.segment import Segmenter
from stream.synthetic.scene import CheckoutScene


class Slowed:
    """The real segmenter plus a fixed extra delay: a stand-in for a slow camera PC."""

    def __init__(self, inner: Segmenter, extra_s: float) -> None:
        self.inner, self.extra_s = inner, extra_s

    def segment(self, image: np.ndarray):  # type: ignore[no-untyped-def]
        time.sleep(self.extra_s)
        return self.inner.segment(image)


def render_video(path: Path, seconds: float, fps: int = 30) -> int:
    scene = CheckoutScene(seed=11, duration_s=seconds, fps=fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for sf in scene.frames():
            for pkt in stream.encode(av.VideoFrame.from_ndarray(sf.image, format="bgr24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return scene.scene_length_frames


def run_once(
    video: Path, *, threaded: bool, realtime: bool, embedder: Embedder, catalog: Catalog, slow_s: float = 0.0
) -> dict:
    cfg = load_config(
        overrides={"runtime.threaded": threaded, "source.realtime": realtime, "runtime.stats_interval_s": 0}
    )
    sink = MemorySink()
    seg = Segmenter(cfg.segment)
    rt = build_runtime(
        cfg,
        lambda on_status, stop: open_source(str(video), cfg.source, on_status, stop),
        sink,
        embedder=embedder,
        catalog=catalog,
        stop=threading.Event(),
        segmenter=Slowed(seg, slow_s) if slow_s else seg,
    )
    summary = rt.run()
    ages = [e["age_ms"] for e in sink.events if e["type"].startswith("item.")]
    summary["event_age_ms"] = {
        "p50": float(np.percentile(ages, 50)) if ages else None,
        "p99": float(np.percentile(ages, 99)) if ages else None,
        "n": len(ages),
    }
    summary["items_entered"] = sum(e["type"] == "item.entered" for e in sink.events)
    return summary


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "faiss": faiss.__version__,
        "pyav": av.__version__,
        "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"])),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the test video (20)")
    ap.add_argument("--slow-ms", type=float, default=60.0, help="extra delay of the slowed stage (60)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline.json")
    args = ap.parse_args()

    cfg = load_config()
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.from_images(demo_photos(), embedder, cfg.catalog, catalog_item_crop(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "checkout-640x480.mp4"
        n = render_video(video, args.seconds)
        runs = {
            "offline_threaded": run_once(video, threaded=True, realtime=False, embedder=embedder, catalog=catalog),
            "offline_sequential": run_once(video, threaded=False, realtime=False, embedder=embedder, catalog=catalog),
            "live30_threaded": run_once(video, threaded=True, realtime=True, embedder=embedder, catalog=catalog),
            "live30_slowed": run_once(
                video, threaded=True, realtime=True, embedder=embedder, catalog=catalog, slow_s=args.slow_ms / 1000
            ),
        }
    ratio = runs["offline_threaded"]["fps"] / max(runs["offline_sequential"]["fps"], 1e-9)
    print(
        f"checkout-stream end-to-end benchmark: 640x480 H.264, {n} frames; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"{'run':<20}{'fps':>8}{'read':>7}{'proc':>7}{'drop':>7}{'age p50':>9}{'age p99':>9}"
        f"{'seg p50':>9}{'cls p50':>9}{'ev age p50':>11}{'entered':>9}"
    )
    for name, s in runs.items():
        st = s["stage_ms"]
        ev = s["event_age_ms"]
        print(
            f"{name:<20}{s['fps']:>8.1f}{s['frames_read']:>7}{s['frames_processed']:>7}"
            f"{s['frames_dropped']:>7}{s['frame_age_ms']['p50']:>9.1f}{s['frame_age_ms']['p99']:>9.1f}"
            f"{st['segment']['p50']:>9.1f}{st['classify']['p50']:>9.1f}"
            f"{(ev['p50'] if ev['p50'] is not None else float('nan')):>11.1f}{s['items_entered']:>9}"
        )
    print(f"threaded / sequential throughput: {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "versions": versions(),
                "frames": n,
                "runs": runs,
                "threaded_over_sequential": ratio,
                "slow_ms": args.slow_ms,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
