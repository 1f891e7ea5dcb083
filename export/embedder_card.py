"""Write the embedder's model card from measured results and ship the ONNX into stream/models.

    python -m export.embedder_card --onnx OUT/embedder.onnx --eval EVAL.json [--held-out HELD.json]
        [--baseline BASE.json] [--int8-eval INT8.json] [--search SEARCH.json]
        [--latency benchmarks/results/models.json] [--dry-run]

EVAL.json / HELD.json / BASE.json are ``python -m export.eval_embedder --json`` outputs (the shipped
model, the same recipe with ``HELD_OUT`` left out, frozen ImageNet features).
Every number in the card comes from those files and OUT/export.json: nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export import backbone
from export.data import HELD_OUT
from export.embedder import config_variant
from export.ship import ship_model


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _rows(label: str, r: dict[str, Any]) -> list[str]:
    out = []
    for key, name in (("train_catalog", "train photos"), ("iconic_catalog", "81 iconic packshots")):
        x = r[key]
        out.append(
            f"| {label} | {name} | {_pct(x['top1'])} | {_pct(x['top5'])} | "
            f"{_pct(x['held_out']['top1'])} ({x['held_out']['n_queries']}) | "
            f"{_pct(x['seen']['top1'])} ({x['seen']['n_queries']}) |"
        )
    return out


def _unseen_rows(label: str, r: dict[str, Any]) -> list[str]:
    tr, ic, un = r["train_catalog"]["held_out"], r["iconic_catalog"]["held_out"], r["unseen_iconic"]
    return [
        f"| {label} | {_pct(tr['top1'])} ({tr['n_queries']}) | {_pct(ic['top1'])} ({ic['n_queries']}) |"
        f" {_pct(un['top1'])} ({un['n_queries']}) |"
    ]


def _comparisons(main: dict, held: dict | None, base: dict | None, report: dict) -> list[str]:
    """Measured facts a reader must not miss: worst products, unseen products vs baseline, int8."""
    lines = []
    worst = sorted(main["train_catalog"]["per_product"].items(), key=lambda kv: kv[1])[:6]
    lines.append(
        "- Weakest products (train-photo catalog, top-1): " + ", ".join(f"{p} {_pct(a)}" for p, a in worst) + "."
    )
    if held and base:
        for name, ft, fr in (
            ("train-photo catalog, val queries", held["train_catalog"]["held_out"], base["train_catalog"]["held_out"]),
            ("packshot catalog, val queries", held["iconic_catalog"]["held_out"], base["iconic_catalog"]["held_out"]),
            ("packshot catalog, every photo", held["unseen_iconic"], base["unseen_iconic"]),
        ):
            a, b = ft["top1"], fr["top1"]
            verdict = "better than" if a > b else "WORSE than" if a < b else "equal to"
            lines.append(
                f"- Unseen products, {name} ({ft['n_queries']} queries): fine-tuned {_pct(a)}"
                f" is {verdict} the frozen baseline {_pct(b)}."
            )
    if "int8" in report:
        cos = report["int8"]["vs_fp32"]["min_cosine"]
        lines.append(
            f"- Static int8 (QDQ, min-max calibration) reached min cosine {cos:.3f} against fp32 on"
            " letterboxed training photos and loses top-1 (table above); it is not shipped: fp32 is"
            " the shipped file."
        )
    return lines


def _frozen_text(variant: str, freeze_upto: int) -> str:
    if freeze_upto < 0:
        return "every layer trained"
    ends = backbone.build(variant, pretrained=False).feature_ends
    stride = next(s for s, end in zip(backbone.FEATURE_STRIDES, ends, strict=True) if end >= freeze_upto)
    return f"stem and blocks 0-{freeze_upto} (stride <= {stride}) frozen (ImageNet BN statistics kept)"


def _base_label(base: dict[str, Any]) -> str:
    return f"frozen ImageNet ({base['input_size']} px, {base['dim']}-d)"


def _loss_text(cfg: dict) -> tuple[str, str, str]:
    """(loss description, name of the training accuracy, CLI flags) for a checkpoint's config; configs
    written before SupCon existed were CosFace."""
    if cfg.get("loss", "cosface") == "supcon":
        return (
            f"supervised contrastive (SupCon, temperature {1 / cfg['scale']:.3g}) over batches of"
            f" {cfg['per_product']} crops of each of {cfg['batch'] // cfg['per_product']} products",
            "in-batch nearest-neighbour accuracy",
            f" --loss supcon --scale {cfg['scale']} --per-product {cfg['per_product']}",
        )
    return (
        f"CosFace (normalised softmax, s={cfg['scale']}, margin={cfg['margin']}) over one proxy per product",
        "proxy accuracy",
        f" --loss cosface --scale {cfg['scale']} --margin {cfg['margin']}",
    )


def _search_line(search: list[dict]) -> str:
    runs = "; ".join(f"{r['label']}: {_pct(r['top1'])}" for r in search)
    return (
        "- The recipe (backbone, input size, frozen depth, loss, packshot share) was chosen on val among runs"
        f" with the products held out (train-photo catalog top-1: {runs}), so val flatters the shipped model a"
        " little; the official test split, not used here, is the independent measure."
    )


def card(
    export_report: dict,
    evals: list[tuple[str, dict]],
    latency: dict | None,
    *,
    held: dict | None = None,
    base: dict | None = None,
    search: list[dict] | None = None,
) -> str:
    """``evals``: (label, eval_embedder result) rows, the shipped model first; ``held``: the same
    recipe trained with ``HELD_OUT`` left out; ``base``: the frozen ImageNet baseline."""
    train = export_report["train"]
    cfg = json.loads(Path(export_report["onnx"]).with_name("checkpoint.json").read_text())["config"]
    main = evals[0][1]
    variant = config_variant(cfg)
    loss_text, acc_name, loss_flags = _loss_text(cfg)
    held_text = (
        f"Held out of training ({len(cfg['held_out'])}): {', '.join(cfg['held_out'])}. This shipped model"
        " is the held-out model."
        if cfg["held_out"]
        else f"Trained on every product. For products it never saw, the same recipe was run again with"
        f" {len(HELD_OUT)} products held out ({', '.join(HELD_OUT)}): see 'Unseen products'."
    )
    lines = [
        "# checkout-embedder",
        "",
        "Turns an item crop into a vector for the product catalog (FAISS, cosine).",
        "",
        "## Contract",
        "",
        f"- input `crops`: uint8 [N, {main['input_size']}, {main['input_size']}, 3] BGR; a crop is"
        " letterboxed to that size (keep aspect, pad grey 127: `stream.stages.embed.letterbox`, also used in"
        " training).",
        "- preprocessing in the graph: BGR->RGB, (x - 127) / 128.",
        f"- output `embeddings`: float32 [N, {main['dim']}], L2-normalised.",
        "- metadata: name, version, input_size, embedding_dim, normalisation, training_data, recipe.",
        "",
        "## Model and training",
        "",
        f"- {backbone.title(variant)} (ImageNet weights from `{backbone.weights_package(variant)}`, Apache-2.0) ->"
        f" global average pool (1280) -> linear -> {main['dim']}-d, L2-normalised.",
        "- Data: Grocery Store Dataset (Klasson et al., WACV 2019, MIT) `train/` photos + `iconic/` packshots"
        f" of {train['n_products']} products ({train['n_images']} photos, {train['n_iconic']} packshots).",
        f"- {held_text}",
        f"- Loss: {loss_text}; AdamW, lr backbone {cfg['lr_backbone']} / head {cfg['lr_head']}, cosine schedule"
        f" over a {cfg['minutes']}-minute wall-clock budget; {_frozen_text(variant, cfg['freeze_upto'])};"
        f" stochastic depth {cfg['drop_connect']}; {cfg['size']} px input.",
        f"- Ran {train['steps']} steps of batch {cfg['batch']} ({train['epochs']} epochs) in"
        f" {train['minutes']} min on 1 CPU thread; final train loss {train['final_loss']},"
        f" {acc_name} {train['final_train_acc']}.",
        "- Augmentation: random resized crops, rotation (25 deg or any), colour/contrast/white-balance"
        " jitter, blur, JPEG, down-up sampling, a skin-coloured hand occluding an edge; packshots are"
        " cut from their white background and pasted on clutter or plain counters, cropped like a box.",
        "",
        "## Measured (grocery-store `val`: 296 photos of 60 products; val was never used in training)",
        "",
        "Every val photo is embedded whole, as the runtime embeds a crop. Held-out = queries of the"
        f" {len(HELD_OUT)} products the held-out run never saw (still in the catalog; a model trained on"
        " every product has seen them). Queries in parentheses.",
        "",
        "| model | catalog | top-1 | top-5 | held-out top-1 | seen top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in evals:
        lines += _rows(label, r)
    if held and base:
        lines += [
            "",
            "### Unseen products",
            "",
            f"The recipe run with {len(HELD_OUT)} products left out of training, against the frozen"
            " baseline. Queries: val photos of those products, and (last column) every train and val"
            " photo of them, all unseen by that run, against the 81-packshot catalog.",
            "",
            "| model | train-photo catalog | packshot catalog | packshot catalog, every photo |",
            "|---|---|---|---|",
            *_unseen_rows("fine-tuned, products held out", held),
            *_unseen_rows(_base_label(base), base),
        ]
    cmp = export_report["torch_vs_ort"]
    lines += [
        "",
        f"torch vs ONNX Runtime on letterboxed photos: min cosine {cmp['min_cosine']:.6f},"
        f" max |diff| {cmp['max_abs']:.2e}.",
    ]
    if latency:
        lines += [
            "",
            f"CPU latency (ONNX Runtime {latency['onnxruntime']}, median of"
            f" {latency['rows'][0]['reps']} runs, shared 2-core machine: indicative):",
            "",
        ]
        lines += ["| precision | threads | batch | median ms |", "|---|---|---|---|"]
        lines += [
            f"| {r['precision']} | {r['threads']} | {r['batch']} | {r['median_ms']:.1f} |"
            for r in latency["rows"]
            if r["model"] == "embedder"
        ]
    lines += [
        "",
        "## Limits",
        "",
        "- Val is small (296 photos, 60 products); the official test split is kept for independent"
        " evaluation and was not used. Photos are hand-held supermarket shots, not top-down counters.",
        *([_search_line(search)] if search else []),
        *_comparisons(main, held, base, export_report),
        "",
        "## Reproduce",
        "",
        "```",
        f"python -m export embedder --out OUT --variant {variant} --minutes {cfg['minutes']}"
        f" --size {cfg['size']} --dim {cfg['dim']} --freeze-upto {cfg['freeze_upto']}{loss_flags}"
        + (" --all-products" if not cfg["held_out"] else ""),
        f"python -m export embedder --out BASE --frozen --variant {variant}"
        f" --size {backbone.NATIVE_SIZE[variant]}      # ImageNet baseline",
        "python -m export.eval_embedder OUT/embedder.onnx BASE/embedder.onnx --json eval.json",
        "```",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.embedder_card", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True, help="eval_embedder JSON of this model")
    p.add_argument("--baseline", type=Path, help="eval_embedder JSON of the frozen baseline")
    p.add_argument("--held-out", type=Path, help="eval_embedder JSON of the same recipe with HELD_OUT left out")
    p.add_argument("--int8-eval", type=Path, help="eval_embedder JSON of the static int8 copy")
    p.add_argument(
        "--search", type=Path, help='JSON list of {"label", "top1"}: the recipes compared on val before this one'
    )
    p.add_argument("--latency", type=Path, help="benchmarks/results/models.json")
    p.add_argument("--dry-run", action="store_true", help="print the card, ship nothing")
    args = p.parse_args(argv)
    export_json = args.onnx.with_name("export.json")
    needed = [export_json, args.eval, *(f for f in (args.held_out, args.baseline, args.int8_eval, args.search) if f)]
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:  # export.json sits beside the ONNX that `python -m export embedder --out DIR` wrote
        p.error(f"missing input file(s): {', '.join(missing)}")
    report = json.loads(export_json.read_text())
    evals = [("fine-tuned (shipped)", json.loads(args.eval.read_text())[0])]
    held = json.loads(args.held_out.read_text())[0] if args.held_out else None
    base = json.loads(args.baseline.read_text())[0] if args.baseline else None
    if held:
        evals.append((f"same recipe, {len(HELD_OUT)} products held out", held))
    if args.int8_eval:
        evals.append(("static int8 of the shipped model (not shipped)", json.loads(args.int8_eval.read_text())[0]))
    if base:
        evals.append((_base_label(base), base))
    search = json.loads(args.search.read_text()) if args.search else None
    latency = json.loads(args.latency.read_text()) if args.latency and args.latency.exists() else None
    text = card(report, evals, latency, held=held, base=base, search=search)
    if args.dry_run:
        print(text)
        return 0
    print(f"shipped {ship_model(args.onnx, 'embedder', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
