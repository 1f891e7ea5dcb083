"""CPU latency of every shipped model (stream/models/MODELS.json) under ONNX Runtime.

    python3 benchmarks/bench_models.py [--reps 30] [--models embedder segmenter] [--extra NAME=PATH ...] [--out JSON]

For each model at its own input size: batch 1 (and batch 4 for embedders), 1 and 2 intra-op threads,
fp32 vs static int8 (``STEM.int8.onnx`` beside the fp32 file if present, else quantised here with
export.onnx_utils on random calibration inputs: fine for latency, not for accuracy claims).
``--extra NAME=PATH`` times another ONNX in the same rounds (e.g. a candidate against the shipped one).
Configurations are timed round-robin (one run of each per round) so machine load hits them alike;
medians over the rounds. Writes benchmarks/results/models.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.stages.onnx_model import MANIFEST, models_dir

RESULTS = ROOT / "benchmarks" / "results" / "models.json"


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def input_for(sess: ort.InferenceSession, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(d, int) or i == 0 else d for i, d in enumerate(inp.shape)]
    if inp.type == "tensor(uint8)":
        return {inp.name: rng.integers(0, 256, shape, dtype=np.uint8)}
    return {inp.name: rng.random(shape, dtype=np.float32)}


def int8_copy(name: str, fp32: Path, tmp: Path, rng: np.random.Generator) -> tuple[Path | None, str]:
    shipped = fp32.with_name(f"{fp32.stem}.int8.onnx")
    if shipped.exists():
        return shipped, f"{shipped.name} beside the fp32 file"
    try:
        from export.onnx_utils import quantize_int8  # noqa: PLC0415
    except ImportError as exc:
        return None, f"not measured ({exc.name} missing)"
    sess = session(fp32, 1)
    calib = [input_for(sess, 1, rng)[sess.get_inputs()[0].name] for _ in range(8)]
    return quantize_int8(fp32, tmp / f"{name}.int8.onnx", calib), "quantised here (random calibration)"


def bench(models: dict[str, Path], reps: int) -> dict:
    """``models``: name -> fp32 ONNX path."""
    rng = np.random.default_rng(0)
    configs, rows = [], []
    with tempfile.TemporaryDirectory() as tmpdir:
        for name, fp32 in models.items():
            q, q_note = int8_copy(name, fp32, Path(tmpdir), rng)
            meta = dict(session(fp32, 1).get_modelmeta().custom_metadata_map)
            batches = (1, 4) if "embedding_dim" in meta else (1,)
            for precision, path in (("fp32", fp32), ("int8", q)):
                if path is None:
                    continue
                for threads in (1, 2):
                    sess = session(path, threads)
                    for b in batches:
                        feed = input_for(sess, b, rng)
                        for _ in range(3):  # warm-up: first runs allocate
                            sess.run(None, feed)
                        configs.append(
                            {
                                "model": name,
                                "precision": precision,
                                "threads": threads,
                                "batch": b,
                                "sess": sess,
                                "feed": feed,
                                "times": [],
                                "input": list(feed.values())[0].shape,
                                "size_kb": round(Path(path).stat().st_size / 1024),
                                "int8_source": q_note if precision == "int8" else None,
                            }
                        )
        # every configuration of every model once per round, so load changes hit them alike
        for _ in tqdm(range(reps), desc="rounds", leave=False):
            for c in configs:
                t = time.perf_counter()
                c["sess"].run(None, c["feed"])
                c["times"].append((time.perf_counter() - t) * 1000)
    for c in configs:
        rows.append(
            {k: c[k] for k in ("model", "precision", "threads", "batch", "size_kb", "int8_source")}
            | {
                "input": list(c["input"]),
                "median_ms": statistics.median(c["times"]),
                "p90_ms": float(np.percentile(c["times"], 90)),
                "reps": reps,
            }
        )
    for r in rows:  # ratios measured side by side in this run
        ref = next(
            x
            for x in rows
            if x["model"] == r["model"]
            and x["precision"] == "fp32"
            and x["threads"] == r["threads"]
            and x["batch"] == r["batch"]
        )
        r["speedup_vs_fp32"] = ref["median_ms"] / r["median_ms"]
    return {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "files": {name: _shown(path) for name, path in models.items()},
        "rows": rows,
    }


def _shown(path: Path) -> str:
    """The path relative to the repository when inside it: results read the same on every checkout."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--models", nargs="*", help="names in MODELS.json (default: all)")
    p.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="also time these ONNX files (same rounds, so ratios are side by side)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON to write (default {RESULTS})")
    args = p.parse_args()
    manifest = json.loads((models_dir() / MANIFEST).read_text())
    models = {}
    for name in args.models or sorted(manifest):
        if name not in manifest:
            p.error(f"{name} is not in {MANIFEST} (shipped: {', '.join(manifest)})")
        models[name] = models_dir() / manifest[name]["file"]
    for item in args.extra:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"--extra wants NAME=PATH to an existing ONNX file, got {item!r}")
        models[name] = Path(path)
    result = bench(models, max(args.reps, 1))
    print(
        f"onnxruntime {result['onnxruntime']}, numpy {result['numpy']}, python {result['python']},"
        f" {result['cpus']} CPUs"
    )
    print(
        f"{'model':<12} {'prec':<5} {'thr':>3} {'batch':>5} {'input':<18} {'KiB':>7} {'median ms':>10}"
        f" {'p90 ms':>8} {'x fp32':>7}"
    )
    for r in result["rows"]:
        print(
            f"{r['model']:<12} {r['precision']:<5} {r['threads']:>3} {r['batch']:>5} {str(r['input']):<18}"
            f" {r['size_kb']:>7} {r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['speedup_vs_fp32']:>7.2f}"
        )
    notes = {r["int8_source"] for r in result["rows"] if r["int8_source"]}
    for n in notes:
        print(f"int8: {n}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
