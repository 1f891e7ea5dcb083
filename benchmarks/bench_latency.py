"""Frame age on live-paced real video, before and after classification moved off the frame loop.

All in one run, interleaved (variant after variant, repeated), each run in a fresh process that
imports ``stream`` from one of two git revisions unpacked to temp dirs: "after" (``--after``, default
HEAD) and "before" (``--before``, default: the commit before the async-classify work):

1. live 640x360: the real clip ``one-by-one-person-detection.mp4`` (shared data; people walking past, up
   to 9 tracked at once, ~100 items in 46 s), scaled to 640x360 and re-timed to 30 fps, first
   ``--seconds`` s, paced at 30 fps, with a catalog built by ``checkout-stream catalog build`` from
   the real top-down product photos (8 products, 336 photos): before / after / after with
   ``classify.worker: inline`` (the new budget, embedding still on the update thread);
2. live 1920x1080: the same clip upscaled, paced at 30 fps: before / after at ``source.max_fps`` 0
   (all 30), 20, 15 and 10 (the rate the box sustains);
3. offline 640x480: the rendered checkout scene of ``bench_pipeline.py`` (seed 11) with the demo
   catalog, threaded, as fast as it goes: before / after (the README's throughput figure).

Per run: frame age at emission p50/p99 (capture -> the frame's events published), frames dropped as
a share of frames read (and skipped at the source by max_fps), processed fps, the update thread's
classify stage p99, items, and the label lag (item.entered -> its first item.classified, ms). The
tables print medians over the repeats; every run is in the JSON.

Usage: python3 benchmarks/bench_latency.py [--seconds 15] [--repeats 3] [--before REV]
Writes benchmarks/results/latency.json and benchmarks/results/latency.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "clips" / "one-by-one-person-detection.mp4"
PHOTOS = DATA / "real" / "topdown-products"


# ------------------------------------------------------------------------------------ child process
def child(tree: str, spec: dict) -> None:
    """One run in this process, with ``stream`` imported from ``tree``; prints one JSON line."""
    sys.path.insert(0, tree)
    import threading  # noqa: PLC0415

    from stream.app import build_runtime  # noqa: PLC0415
    from stream.config import load_config  # noqa: PLC0415
    from stream.sources.file import open_source  # noqa: PLC0415
    from stream.stages.catalog import Catalog  # noqa: PLC0415
    from stream.stages.embed import Embedder  # noqa: PLC0415

    class TimedSink:
        def __init__(self) -> None:
            self.events: list[tuple[float, dict]] = []

        def publish(self, event: dict) -> None:
            self.events.append((time.monotonic(), event))

        def close(self) -> None:
            pass

    cfg = load_config(overrides={"runtime.stats_interval_s": 0, **spec["overrides"]})
    embedder = Embedder(cfg.classify.model)
    if spec["catalog"] == "demo":
        from stream.sources.demo import demo_photos  # noqa: PLC0415

        catalog = Catalog.from_images(demo_photos(), embedder, cfg.catalog)
    else:
        catalog = Catalog.load(Path(spec["catalog"]), embedder, cfg.catalog)
    sink = TimedSink()
    load = os.getloadavg()[0]
    rt = build_runtime(
        cfg,
        lambda on_status, stop: open_source(spec["clip"], cfg.source, on_status, stop),
        sink,
        embedder=embedder,
        catalog=catalog,
        stop=threading.Event(),
    )
    s = rt.run()
    entered: dict[int, float] = {}
    lags = []
    seen: set[int] = set()
    items = 0
    for t, ev in sink.events:
        if ev["type"] == "item.entered":
            entered[ev["track_id"]] = t
            items += 1
        elif ev["type"] == "item.classified" and ev["track_id"] not in seen and ev["track_id"] in entered:
            seen.add(ev["track_id"])
            lags.append((t - entered[ev["track_id"]]) * 1000.0)
    out = {
        "frames_read": s["frames_read"],
        "frames_processed": s["frames_processed"],
        "frames_dropped": s["frames_dropped"],
        "frames_skipped": s.get("frames_skipped", 0),
        "fps": s["fps"],
        "frame_age_ms": s["frame_age_ms"],
        "stage_ms": s["stage_ms"],
        "classify": s.get("classify"),
        "items": items,
        "labelled": len(seen),
        "label_lag_ms_p50": statistics.median(lags) if lags else None,
        "loadavg_1min_at_start": round(load, 2),
    }
    print("RESULT " + json.dumps(out))


# ------------------------------------------------------------------------------------ parent
def unpack(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def prepare_clip(src: Path, dst: Path, size: tuple[int, int], seconds: float, fps: int = 30) -> int:
    """``src`` scaled to ``size`` and re-timed to ``fps`` (frame for frame), the first ``seconds``."""
    import av  # noqa: PLC0415
    import cv2  # noqa: PLC0415

    n, limit = 0, int(seconds * fps)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        st = out.add_stream("h264", rate=fps)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        st.options = {"preset": "veryfast", "crf": "23", "g": "60"}
        for f in inp.decode(video=0):
            img = f.to_ndarray(format="bgr24")
            interp = cv2.INTER_AREA if size[0] < img.shape[1] else cv2.INTER_LINEAR
            img = cv2.resize(img, size, interpolation=interp)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
            n += 1
            if n >= limit:
                break
        for p in st.encode():
            out.mux(p)
    return n


def run_child(tree: Path, spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(tree), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=str(tree),
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"run {spec} in {tree} failed:\n{proc.stderr[-3000:]}")


def med(runs: list[dict], key) -> float:  # type: ignore[no-untyped-def]
    vals = [key(r) for r in runs if key(r) is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each live clip (15)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each variant, interleaved (3)")
    ap.add_argument("--before", default="8f26eb7^", help="git revision measured as 'before' (8f26eb7^)")
    ap.add_argument("--after", default="HEAD", help="git revision measured as 'after' (HEAD)")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    if not CLIP.exists() or not PHOTOS.is_dir():
        sys.exit(f"needs the shared data: {CLIP} and {PHOTOS}")

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        before = unpack(args.before, tmp / "before")
        after = unpack(args.after, tmp / "after")
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True, text=True, check=True
        ).stdout.strip()
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.after], capture_output=True, text=True, check=True
        ).stdout.strip()
        catalog = tmp / "catalog-topdown"
        subprocess.run(
            [sys.executable, "-m", "stream", "catalog", "build", str(PHOTOS), "-o", str(catalog), "--quiet"],
            check=True,
            cwd=str(ROOT),
            capture_output=True,
        )
        n360 = prepare_clip(CLIP, tmp / "live360.mp4", (640, 360), args.seconds)
        n1080 = prepare_clip(CLIP, tmp / "live1080.mp4", (1920, 1080), args.seconds)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_pipeline import render_video, versions  # noqa: PLC0415

        n480 = render_video(tmp / "offline480.mp4", 20.0)

        live = {"source.realtime": True}
        c360, c1080 = str(tmp / "live360.mp4"), str(tmp / "live1080.mp4")
        off = {"clip": str(tmp / "offline480.mp4"), "catalog": "demo", "overrides": {"source.realtime": False}}
        variants: dict[str, tuple[Path, dict]] = {
            "360 before": (before, {"clip": c360, "catalog": str(catalog), "overrides": live}),
            "360 after": (after, {"clip": c360, "catalog": str(catalog), "overrides": live}),
            "360 after, inline": (
                after,
                {"clip": c360, "catalog": str(catalog), "overrides": {**live, "classify.worker": "inline"}},
            ),
            "1080 before": (before, {"clip": c1080, "catalog": str(catalog), "overrides": live}),
        }
        for cap in (0, 20, 15, 10):
            variants[f"1080 after, max_fps {cap or 'off'}"] = (
                after,
                {"clip": c1080, "catalog": str(catalog), "overrides": {**live, "source.max_fps": float(cap)}},
            )
        variants["480 offline before"] = (before, off)
        variants["480 offline after"] = (after, off)
        if args.only:
            keep = [v.strip() for v in args.only.split(",")]
            variants = {k: v for k, v in variants.items() if k in keep}

        runs: dict[str, list[dict]] = {k: [] for k in variants}
        for rep in range(args.repeats):
            for name, (tree, spec) in variants.items():
                t0 = time.monotonic()
                r = run_child(tree, spec)
                runs[name].append(r)
                print(
                    f"[{rep + 1}/{args.repeats}] {name:<26} age p50 {r['frame_age_ms']['p50']:6.1f} "
                    f"p99 {r['frame_age_ms']['p99']:6.1f} ms, dropped {r['frames_dropped']}/{r['frames_read']}, "
                    f"{r['fps']:.1f} fps, load {r['loadavg_1min_at_start']} ({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )

    rows = {}
    for name, rs in runs.items():
        rows[name] = {
            "age_p50": med(rs, lambda r: r["frame_age_ms"]["p50"]),
            "age_p99": med(rs, lambda r: r["frame_age_ms"]["p99"]),
            "dropped_pct": med(rs, lambda r: 100.0 * r["frames_dropped"] / max(r["frames_read"], 1)),
            "skipped": med(rs, lambda r: r["frames_skipped"]),
            "fps": med(rs, lambda r: r["fps"]),
            "classify_p99": med(rs, lambda r: r["stage_ms"]["classify"]["p99"]),
            "segment_p50": med(rs, lambda r: r["stage_ms"]["segment"]["p50"]),
            "items": med(rs, lambda r: r["items"]),
            "labelled": med(rs, lambda r: r["labelled"]),
            "label_lag_p50": med(rs, lambda r: r["label_lag_ms_p50"]),
            "crops": med(rs, lambda r: (r["classify"] or {}).get("crops_embedded")),
        }
    vers = versions()
    print(
        f"\ncheckout-stream frame age, before = {rev} vs after = {head}; medians of "
        f"{args.repeats} interleaved runs; clips: {CLIP.name} at 640x360 ({n360} frames) and 1920x1080 "
        f"({n1080} frames) paced at 30 fps, catalog = {PHOTOS.name} (8 products); offline: rendered "
        f"640x480 scene ({n480} frames), demo catalog. ORT intra-op threads 1 (segmenter, embedder); "
        + ", ".join(f"{k} {v}" for k, v in vers.items())
    )
    head_row = (
        f"{'variant':<27}{'age p50':>8}{'age p99':>8}{'drop %':>8}{'skipped':>8}{'fps':>7}{'cls p99':>8}"
        f"{'seg p50':>8}{'items':>6}{'labelled':>9}{'lag p50':>8}{'crops':>7}"
    )
    print(head_row)
    for name, r in rows.items():
        print(
            f"{name:<27}{r['age_p50']:>8.1f}{r['age_p99']:>8.1f}{r['dropped_pct']:>8.1f}{r['skipped']:>8.0f}"
            f"{r['fps']:>7.1f}{r['classify_p99']:>8.1f}{r['segment_p50']:>8.1f}{r['items']:>6.0f}"
            f"{r['labelled']:>9.0f}{r['label_lag_p50']:>8.0f}{r['crops']:>7.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "versions": vers,
                "before": rev,
                "after": head,
                "seconds": args.seconds,
                "repeats": args.repeats,
                "clip": str(CLIP.relative_to(DATA)),
                "catalog_photos": str(PHOTOS.relative_to(DATA)),
                "frames": {"live360": n360, "live1080": n1080, "offline480": n480},
                "medians": rows,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    plot(rows, args.out.with_suffix(".png"))


def plot(rows: dict, path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    live = [k for k in rows if not k.startswith("480")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = range(len(live))
    ax1.barh([i + 0.2 for i in y], [rows[k]["age_p50"] for k in live], height=0.4, label="p50")
    ax1.barh([i - 0.2 for i in y], [rows[k]["age_p99"] for k in live], height=0.4, label="p99")
    ax1.set_yticks(list(y), live)
    ax1.invert_yaxis()
    ax1.axvline(100, ls="--", c="grey", lw=0.8)
    ax1.axvline(150, ls=":", c="grey", lw=0.8)
    ax1.set_xlabel("frame age at emission, ms (targets: 360p p99 100, 1080p p99 150)")
    ax1.legend()
    caps = [k for k in rows if k.startswith("1080 after")]
    rate = [rows[k]["fps"] for k in caps]
    ax2.plot(rate, [rows[k]["age_p99"] for k in caps], "o-", label="p99 frame age")
    ax2.plot(rate, [rows[k]["age_p50"] for k in caps], "s-", label="p50 frame age")
    for k, x in zip(caps, rate, strict=True):
        ax2.annotate(k.split(",")[-1].strip(), (x, rows[k]["age_p99"]), fontsize=8)
    ax2.axhline(150, ls=":", c="grey", lw=0.8)
    ax2.set_xlabel("1080p frames processed per second (source.max_fps caps the rate)")
    ax2.set_ylabel("ms")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
