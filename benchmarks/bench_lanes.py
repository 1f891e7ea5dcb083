"""Lanes per box: N lanes of a real 640x360 clip, each paced at 15 fps, in one process on this CPU.

All in one run, with the shipped models and the demo catalog (so the embedder works on real crops):

1. segmentation alone, batched against unbatched: K frames segmented by K threads calling the shared
   session at once (what the lanes do with ``segment.batch_window_ms: 0``) against one
   ``segment_batch`` call of K frames (what the ``SegmentBatcher`` does), median of repeats;
2. for N = 1, 2, ... lanes (``stream.lanes.run_lanes``, the product's own multi-lane run; every lane
   decodes its own copy of the clip, paced like a camera): per-lane frames/s, frame age at emission
   p50/p99 (capture -> the frame's events published), dropped frames, and the process's CPU time per
   lane; unbatched and batched side by side at each N, at least up to ``--min-lanes`` and then until
   p99 passes ``--limit-ms`` in every mode (``--modes`` adds batching with 2 intra-op threads).

The clip is ``../shared/data/clips/car-detection.mp4`` (768x432, 12.5 fps), scaled to 640x360 and
re-timed to 15 fps (H.264, written here). Usage:
    python3 benchmarks/bench_lanes.py [--seconds 12] [--max-lanes 6] [--limit-ms 200]
Writes benchmarks/results/lanes.json and benchmarks/results/lanes.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.app import catalog_item_crop
from stream.config import LaneSpec, load_config, load_lanes
from stream.lanes import Models, run_lanes
from stream.sinks import MemorySink
from stream.sources.demo import demo_photos
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder
from stream.stages.segment import SegmentBatcher, Segmenter

CLIP = ROOT.parent / "shared" / "data" / "clips" / "car-detection.mp4"
RESULTS = ROOT / "benchmarks" / "results"
FPS = 15
SIZE = (640, 360)

# name -> (segment.batch_window_ms, segment.model.intra_op_threads); "processes": one `run` per lane
MODES = {
    "unbatched": (0.0, 1),
    "batched 5 ms": (5.0, 1),
    "processes": (0.0, 1),
    "batched 5 ms, 2 threads": (5.0, 2),
}


def make_clip(out: Path, seconds: float) -> int:
    """The real clip scaled to 640x360 and re-timed to 15 fps (the first ``seconds``); its frame count."""
    n = int(seconds * FPS)
    with av.open(str(CLIP)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        written = 0
        frames = src.decode(video=0)
        while written < n:
            frame = next(frames, None)
            if frame is None:  # loop the clip when it is shorter than asked
                src.seek(0)
                frames = src.decode(video=0)
                continue
            img = cv2.resize(frame.to_ndarray(format="bgr24"), SIZE, interpolation=cv2.INTER_AREA)
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
            written += 1
        dst.mux(stream.encode(None))
    return n


def make_catalog(out: Path) -> Path:
    cfg = load_config()
    Catalog.from_images(demo_photos(), Embedder(cfg.classify.model), cfg.catalog, catalog_item_crop(cfg)).save(out)
    return out


def bench_segment(frames: list[np.ndarray], repeats: int) -> list[dict[str, Any]]:
    """Frames/s segmenting K frames: K threads calling segment() at once vs one segment_batch(K)."""
    rows = []
    for threads_per_call in (1, 2):
        cfg = load_config(overrides={"segment.model.intra_op_threads": threads_per_call})
        seg = Segmenter(cfg.segment)
        seg.segment_batch(frames[:2])  # warm
        for k in (1, 2, 3, 4):
            batch = frames[:k]
            concurrent, batched = [], []
            for _ in range(repeats):
                gate = threading.Barrier(k + 1)

                def one(im: np.ndarray, gate: threading.Barrier = gate, seg: Segmenter = seg) -> None:
                    gate.wait()
                    seg.segment(im)

                ts = [threading.Thread(target=one, args=(im,)) for im in batch]
                for t in ts:
                    t.start()
                t0 = time.perf_counter()
                gate.wait()
                for t in ts:
                    t.join()
                concurrent.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                seg.segment_batch(batch)
                batched.append(time.perf_counter() - t0)
            c, b = statistics.median(concurrent), statistics.median(batched)
            rows.append(
                {
                    "frames": k,
                    "intra_op_threads": threads_per_call,
                    "concurrent_ms": round(c * 1000, 2),
                    "batched_ms": round(b * 1000, 2),
                    "concurrent_fps": round(k / c, 1),
                    "batched_fps": round(k / b, 1),
                }
            )
    return rows


SETTINGS: dict[str, Any] = {}  # --set KEY=VALUE: config keys for every lane (and every process)


def lane_specs(tmp: Path, clip: Path, n: int, window_ms: float, threads: int) -> list[LaneSpec]:
    body = "".join(f"  - {{name: lane-{i + 1}, source: '{clip}'}}\n" for i in range(n))
    path = tmp / f"lanes-{n}.yaml"
    path.write_text(
        "runtime: {stats_interval_s: 0}\nsource: {realtime: true}\n"
        f"segment: {{batch_window_ms: {window_ms}, model: {{intra_op_threads: {threads}}}}}\nlanes:\n{body}"
    )
    return load_lanes(path, overrides=SETTINGS)


def run_processes(tmp: Path, clip: Path, catalog: Path, n: int) -> tuple[dict[str, dict[str, Any]], None]:
    """N separate ``checkout-stream run`` processes, one lane each (each loads its own models); their
    run.summary events. Started together; model loading staggers their starts by well under a second."""
    cfg = tmp / "quiet.yaml"
    nested: dict[str, Any] = {"runtime": {"stats_interval_s": 0}}
    for dotted, value in SETTINGS.items():
        *heads, last = dotted.split(".")
        node = nested
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    cfg.write_text(json.dumps(nested) + "\n")  # JSON is YAML
    procs = []
    for i in range(n):
        events = tmp / f"proc-{n}-{i + 1}.jsonl"
        cmd = [sys.executable, "-m", "stream", "run", str(clip), "--realtime", "--no-display", "--config", str(cfg)]
        cmd += ["--lane", f"lane-{i + 1}", "--catalog", str(catalog), "--events", f"jsonl:{events}"]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), events))
    out = {}
    for i, (proc, events) in enumerate(procs):
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError(f"lane-{i + 1}: {err.decode()[-500:]}")
        summary = next(e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "run.summary")
        out[f"lane-{i + 1}"] = summary["summary"]
    return out, None


def run_n(tmp: Path, clip: Path, catalog: Path, *, n: int, mode: str, frames: int) -> dict[str, Any]:
    window_ms, threads = MODES[mode]
    if mode == "processes":
        summaries, _ = run_processes(tmp, clip, catalog, n)
        return _row(n, mode, window_ms, threads, frames, summaries, None, [])
    lanes = lane_specs(tmp, clip, n, window_ms, threads)
    models = Models()
    cpu0 = wall0 = 0.0

    def started(_runtimes: dict) -> None:
        nonlocal cpu0, wall0
        cpu0, wall0 = time.process_time(), time.monotonic()

    summaries = run_lanes(
        lanes, threading.Event(), catalog=catalog, sinks=lambda _l: MemorySink(), models=models, on_ready=started
    )
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return _row(n, mode, window_ms, threads, frames, summaries, (cpu, wall), models.batchers)


def _row(  # noqa: PLR0917
    n: int,
    mode: str,
    window_ms: float,
    threads: int,
    frames: int,
    summaries: dict[str, dict[str, Any]],
    cpu_wall: tuple[float, float] | None,
    batchers: list[SegmentBatcher],
) -> dict[str, Any]:
    per = []
    for name, s in summaries.items():
        if "error" in s:
            raise RuntimeError(f"{name}: {s['error']}")
        per.append(
            {
                "lane": name,
                "fps": round(s["frames_processed"] / s["wall_s"], 2),
                "processed": s["frames_processed"],
                "dropped": s["frames_dropped"],
                "age_p50_ms": s["frame_age_ms"]["p50"],
                "age_p99_ms": s["frame_age_ms"]["p99"],
                "segment_p50_ms": s["stage_ms"]["segment"]["p50"],
                "classify_p99_ms": s["stage_ms"]["classify"]["p99"],
            }
        )
    processed = sum(p["processed"] for p in per)
    return {
        "lanes": n,
        "mode": mode,
        "batch_window_ms": window_ms,
        "intra_op_threads": threads,
        "frames_per_lane": frames,
        "fps_min": min(p["fps"] for p in per),
        "fps_mean": round(statistics.mean(p["fps"] for p in per), 2),
        "age_p50_ms": round(statistics.median(p["age_p50_ms"] for p in per), 1),
        "age_p99_ms": max(p["age_p99_ms"] for p in per),
        "dropped": sum(p["dropped"] for p in per),
        "drop_pct": round(100 * sum(p["dropped"] for p in per) / (n * frames), 2),
        "cpu_cores_used": round(cpu_wall[0] / cpu_wall[1], 2) if cpu_wall else None,
        "cpu_ms_per_lane_frame": round(1000 * cpu_wall[0] / max(1, processed), 2) if cpu_wall else None,
        "mean_batch": round(batchers[0].frames / batchers[0].batches, 2) if batchers and batchers[0].batches else None,
        "per_lane": per,
    }


def versions() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "pyav": av.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        # 1: the kernel shares the CPU between sessions first, so other sessions' niced jobs still take
        # their session's share (nice only orders processes within a session).
        "sched_autogroup": _read("/proc/sys/kernel/sched_autogroup_enabled"),
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def plot(rows: list[dict[str, Any]], out: Path, limit_ms: float) -> None:
    import matplotlib  # noqa: PLC0415  (only the plot needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        n = [r["lanes"] for r in mine]
        axes[0].plot(n, [r["fps_min"] for r in mine], "o-", label=mode)
        axes[1].plot(n, [r["age_p99_ms"] for r in mine], "o-", label=mode)
        if mine[0]["cpu_ms_per_lane_frame"] is not None:
            axes[2].plot(n, [r["cpu_ms_per_lane_frame"] for r in mine], "o-", label=mode)
    axes[0].axhline(FPS, color="grey", ls="--", lw=1)
    axes[1].axhline(limit_ms, color="grey", ls="--", lw=1)
    axes[0].set(title="frames/s of the slowest lane (paced at 15)", xlabel="lanes", ylabel="frames/s")
    axes[1].set(title="frame age p99 (worst lane)", xlabel="lanes", ylabel="ms")
    axes[2].set(title="cost per lane: CPU ms per lane-frame", xlabel="lanes", ylabel="CPU ms")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xticks(sorted({r["lanes"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"lanes of a 640x360 real clip at {FPS} fps on {os.cpu_count()} CPU cores (stream.lanes.run_lanes)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="clip length per lane (default 12 s)")
    ap.add_argument("--max-lanes", type=int, default=6)
    ap.add_argument("--limit-ms", type=float, default=200.0, help="stop adding lanes once every mode's p99 passes this")
    ap.add_argument("--repeats", type=int, default=15, help="repeats of the segmentation micro-benchmark")
    ap.add_argument("--min-lanes", type=int, default=4, help="always measure up to this many lanes (default 4)")
    ap.add_argument("--modes", nargs="+", default=list(MODES)[:3], choices=list(MODES))
    ap.add_argument("--out", default="lanes", help="results name: benchmarks/results/OUT.json and OUT.png")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config keys for every lane (YAML values)"
    )
    args = ap.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        SETTINGS[key] = yaml.safe_load(value)

    info = versions()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        clip = tmp / "clip-640x360-15fps.mp4"
        frames = make_clip(clip, args.seconds)
        catalog = make_catalog(tmp / "catalog")
        cap = cv2.VideoCapture(str(clip))
        sample = [cap.read()[1] for _ in range(4)]
        seg_rows = bench_segment(sample, args.repeats)
        print("segmentation alone (640x360 frames -> 256x192 model), median of", args.repeats)
        head = ("frames", "threads/call", "K threads ms", "1 batch ms", "K thr fps", "batch fps")
        print(" ".join(f"{h:>12}" for h in head))
        for r in seg_rows:
            keys = ("frames", "intra_op_threads", "concurrent_ms", "batched_ms", "concurrent_fps", "batched_fps")
            print(" ".join(f"{r[k]:>12}" for k in keys))
        rows: list[dict[str, Any]] = []
        live = set(args.modes)
        for n in range(1, args.max_lanes + 1):
            for mode in args.modes:
                if mode not in live:
                    continue
                row = run_n(tmp, clip, catalog, n=n, mode=mode, frames=frames)
                rows.append(row)
                print(
                    f"lanes {n} {mode:<24} fps min {row['fps_min']:5.2f} mean {row['fps_mean']:5.2f} | age p50 "
                    f"{row['age_p50_ms']:6.1f} p99 {row['age_p99_ms']:6.1f} ms | dropped {row['dropped']:4d} "
                    f"({row['drop_pct']:.1f}%) | CPU {row['cpu_cores_used']} cores, "
                    f"{row['cpu_ms_per_lane_frame']} ms/lane-frame | batch {row['mean_batch']}",
                    flush=True,
                )
                if row["age_p99_ms"] > args.limit_ms and n >= args.min_lanes:
                    live.discard(mode)
            if not live:
                break
    print()
    print(f"{'lanes':>5} {'mode':<24} {'fps/lane (min)':>14} {'p50 ms':>7} {'p99 ms':>7} {'dropped':>11} {'CPU ms':>7}")
    for r in rows:
        print(
            f"{r['lanes']:>5} {r['mode']:<24} {r['fps_min']:>14.2f} {r['age_p50_ms']:>7.1f} {r['age_p99_ms']:>7.1f} "
            f"{r['dropped']:>4d} ({r['drop_pct']:4.1f}%) {r['cpu_ms_per_lane_frame'] or '-':>7}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": "N lanes of a 640x360 real clip (car-detection.mp4 scaled, re-timed to 15 fps) paced like cameras, "
        "one process (stream.lanes.run_lanes), shipped models + demo catalog",
        "versions": info,
        "segmentation_alone": seg_rows,
        "lanes": rows,
        "limit_ms": args.limit_ms,
        "seconds": args.seconds,
        "settings": SETTINGS,
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(rows, RESULTS / f"{args.out}.png", args.limit_ms)
    print(f"wrote {RESULTS / args.out}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
