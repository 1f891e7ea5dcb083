"""Write the model card of the combined embedder (``export.combined``) from measured results and ship it.

    python -m export.combined_card --onnx OUT/embedder.onnx --bench benchmarks/results/recognition.json
        --selection benchmarks/results/recognition_w.json --latency benchmarks/results/embedder_combined.json
        --previous-card OLD.md [--dry-run]

``--bench``: bench_recognition JSON holding the rows ``ROWS`` names; ``--selection``: bench_recognition
``--sweep`` JSON(s) of the all-products and the held-out fine-tuned model with the ImageNet features
(how w was picked); ``--latency``: bench_models JSON with the old embedder as ``embedder`` and this one as
``combined``; ``--previous-card``: the card of the embedder this one replaces, kept at the end.
Every number comes from those files: nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export.data import HELD_OUT
from export.ship import ship_model

# bench row name -> label in the card, in table order
ROWS = {
    "frozen224": "frozen ImageNet Lite0 (224 px, 1280-d)",
    "frozen288": "frozen ImageNet Lite0 (288 px, 1280-d)",
    "finetuned": "fine-tuned alone (v1.0.0, shipped before)",
    "combined": "combined (this model)",
    "finetuned_held_out": "fine-tuned alone, 10 products held out",
    "combined_held_out": "combined, 10 products held out",
}
COLUMNS = (
    ("val_train", "val, train-photo catalog"),
    ("val_iconic", "val, packshot catalog"),
    ("val_train_held_out", "held-out products, train-photo catalog"),
    ("val_iconic_held_out", "held-out products, packshot catalog"),
    ("unseen_iconic", "held-out products, every photo, packshot catalog"),
    ("topdown", "real top-down, 5-photo catalog"),
    ("topdown_crops", "real top-down, item crops, 5-photo catalog"),
)
OPEN = (
    ("open_grocery_iconic", "grocery, 61 packshots"),
    ("open_grocery_train", "grocery, train photos of 61"),
    ("open_topdown", "top-down, 6 of 8 (28 splits)"),
    ("open_topdown_crops", "top-down item crops, 6 of 8 (28 splits)"),
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f} %"


def _closed_table(rows: dict[str, dict[str, Any]], names: dict[str, str] = ROWS) -> list[str]:
    lines = ["| model | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for key, label in names.items():
        if key in rows:
            r = rows[key]
            cells = " | ".join(f"{_pct(r[c]['top1'])} ({r[c]['n_queries']})" for c, _ in COLUMNS)
            lines.append(f"| {label} | {cells} |")
    return lines


def _open_table(rows: dict[str, dict[str, Any]], at: str, names: dict[str, str] = ROWS) -> list[str]:
    """``at``: "default" (the config the bench ran with) or "picked" (bench's pick_rule)."""
    lines = ["| model | split | absent rejected | present named right | present rejected |", "|---|---|---|---|---|"]
    for key, label in names.items():
        if key not in rows:
            continue
        for split, name in OPEN:
            o = rows[key][split] if at == "default" else rows[key]["picked_rule"][split]
            lines.append(
                f"| {label} | {name} | {_pct(o['unknown_rejected'])} | {_pct(o['known_correct'])} |"
                f" {_pct(o['known_rejected'])} |"
            )
    return lines


def _open_section(
    rows: dict[str, dict[str, Any]],
    rule: dict[str, Any],
    picked: dict[str, Any],
    names: dict[str, str] = ROWS,
    default_note: str = "",
) -> list[str]:
    """The open-set splits, then the table at the default rule and at each model's grocery-picked rule."""
    return [
        "Absent products must come out unknown. Splits: grocery, catalog = the packshots or train photos of"
        " 61 of 81 products (every 4th product by name left out), queries = all 296 val photos; top-down,"
        " the 5-photo catalog without 2 of the 8 products, all 28 pairs, averaged. Per photo (a track"
        " averages several crops at run time, which this does not credit).",
        "",
        f"At the default config (threshold {rule['threshold']}, margin {rule['margin']}, cohort {rule['cohort']}"
        f"{default_note}):",
        "",
        *_open_table(rows, "default", names),
        "",
        "At the rule each model's figures pick on the grocery splits alone (bench_recognition `pick_rule`: the"
        " (threshold, margin) whose worse grocery split has the best (rejected + named right) / 2); for this"
        f" model threshold {picked['threshold']}, margin {picked['margin']}:",
        "",
        *_open_table(rows, "picked", names),
    ]


def _selection_table(selection: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| fine-tuned part | w | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|---" + "|---" * len(COLUMNS) + "|",
    ]
    for sel in selection:
        for r in sel["results"].values():
            if "w" not in r:
                continue
            cells = " | ".join(_pct(r[c]["top1"]) for c, _ in COLUMNS)
            lines.append(f"| {sel['label']} | {r['w']:g} | {cells} |")
    return lines


def _latency_section(latency: dict[str, Any], new: str, old_label: str, beside: str) -> list[str]:
    """The card's latency paragraph: ``new`` beside the ``embedder`` rows of a bench_models JSON
    (``old_label`` in the table, ``beside`` in the sentence above it)."""
    rows = {(r["model"], r["precision"], r["threads"], r["batch"]): r["median_ms"] for r in latency["rows"]}
    lines = [
        "",
        f"CPU latency beside the {beside} (ONNX Runtime {latency['onnxruntime']}, median of"
        f" {latency['rows'][0]['reps']} interleaved rounds, shared 2-core machine under load: indicative):",
        "",
        f"| precision | threads | batch | {old_label} (ms) | {new} (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for (model, prec, threads, batch), ms in sorted(rows.items()):
        if model != new:
            continue
        old = rows.get(("embedder", prec, threads, batch))
        ratio = f"{ms / old:.2f}x" if old else "-"
        lines.append(
            f"| {prec} | {threads} | {batch} | {old:.1f} | {ms:.1f} | {ratio} |"
            if old
            else f"| {prec} | {threads} | {batch} | - | {ms:.1f} | - |"
        )
    return lines


def card(export_report: dict, bench: dict, selection: list[dict], latency: dict | None, previous: str) -> str:
    rows = bench["results"]
    w, dim, shared = export_report["w"], export_report["dim"], export_report["shared_blocks"]
    rule = bench["rule"]
    picked = rows["combined"]["picked_rule"]
    lines = [
        "# checkout-embedder (combined)",
        "",
        "Turns an item crop into a vector for the product catalog (FAISS, cosine): the grocery-tuned features"
        " of the previous embedder and general ImageNet features side by side, so products nobody trained on"
        " keep the ImageNet features' recognition.",
        "",
        "## Contract",
        "",
        "- input `crops`: uint8 [N, 288, 288, 3] BGR, letterboxed (keep aspect, pad grey 127:"
        " `stream.stages.embed.letterbox`).",
        "- preprocessing in the graph: BGR->RGB, (x - 127) / 128.",
        f"- output `embeddings`: float32 [N, {dim}], L2-normalised.",
        "- metadata: name, version, input_size, embedding_dim, normalisation, training_data, recipe, backbone,"
        " combination (w, parts, shared blocks).",
        "",
        "## Model",
        "",
        f"- One graph (`export/combined.py`): the EfficientNet-Lite0 stem and blocks 0-{shared - 1} run once"
        " (the fine-tuned model kept them at their ImageNet values), then two tails: the fine-tuned blocks +"
        " head + 128-d projection of the previous embedder (read back from its ONNX, unchanged), and the"
        " ImageNet blocks + head + global average pool (1280-d).",
        f"- Each part L2-normalised, concatenated as [sqrt(1-w) a, sqrt(w) b] with w = {w:g}: the cosine of two"
        f" embeddings is {1 - w:g} x the fine-tuned cosine + {w:g} x the ImageNet cosine. No training beyond the"
        " previous embedder's (see 'Previous model').",
        f"- w was picked on grocery data only ({', '.join(c for c, _ in COLUMNS[:5])}), never on the top-down"
        " set: see 'Choosing w'.",
        "",
        "## Measured",
        "",
        "`python3 benchmarks/bench_recognition.py` (every photo embedded whole through the runtime's Embedder;"
        " a product's score is its best catalog photo). Top-1, queries in parentheses. Held-out products"
        f" ({', '.join(HELD_OUT)}) are unseen only by the held-out rows (the same recipe trained without them);"
        " the all-products rows have seen them. Top-down: 8 real products nobody trained on, catalog = first 5"
        " photos of each by file name, queries = the other 296 (validation only).",
        "",
        *_closed_table(rows),
        "",
        "### Open set",
        "",
        *_open_section(rows, rule, picked),
        "",
        "The default rule keeps the grocery-picked threshold and lowers the margin to the largest grid value at"
        " which the rendered scenes (`benchmarks/bench_scenes.py`, seeds 0-2, 4, 5, 20-24) keep the previous"
        " embedder's label accuracy: a track's label must not turn unknown where the old model named it.",
        "",
        "### Choosing w",
        "",
        "Both fine-tuned models (all products and held out) combined with the ImageNet features at several w"
        " (`bench_recognition.py --sweep`; exact: the combined ONNX computes the same cosines). w is the largest"
        " weight at which the all-products model keeps its own grocery val top-1 with the train-photo catalog"
        " (the target set); the held-out rows show what that w does for grocery products it never saw:",
        "",
        *_selection_table(selection),
        "",
        f"torch vs ONNX Runtime (random pixels): min cosine {export_report['torch_vs_ort']['min_cosine']:.6f},"
        f" max |diff| {export_report['torch_vs_ort']['max_abs']:.2e}.",
    ]
    if latency:
        lines += _latency_section(latency, "combined", "fine-tuned alone", "fine-tuned model alone")
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "python -m export embedder --out BASE288 --frozen --size 288     # ImageNet part, for the w sweep",
        "python -m export embedder --out HELD --minutes 58               # fine-tuned, 10 products held out",
        "python3 benchmarks/bench_recognition.py --sweep stream/models/embedder.onnx BASE288/embedder.onnx",
        f"python -m export.combined --finetuned FINETUNED.onnx --w {w:g} --out OUT",
        "python3 benchmarks/bench_recognition.py combined=OUT/embedder.onnx ...",
        "```",
        "",
        "## Previous model: the fine-tuned features alone (v1.0.0)",
        "",
        "Its card, unchanged; it is the fine-tuned part of this model.",
        "",
    ]
    old = previous.split("\n## File", maxsplit=1)[0].strip().splitlines()
    lines += ["#" + ln if ln.startswith("#") else ln for ln in old[1:]]
    return "\n".join(lines) + "\n"


GENERAL_ROWS = {
    "frozen224": "frozen ImageNet Lite0 (224 px, 1280-d)",
    "frozen288": "frozen ImageNet Lite0 (288 px, 1280-d)",
    "finetuned": "fine-tuned alone (v1.0.0, shipped before; trained on all products)",
    "general": "distilled, one trunk (this model; 10 products held out)",
}


def general_card(export_report: dict, bench: dict, selection: list[dict], latency: dict | None, previous: str) -> str:
    """Card of ``export.embedder.GeneralNet``: one trunk fine-tuned with learning without forgetting, its
    projection and pooled features side by side (``python -m export.embedder train|export``)."""
    rows = bench["results"]
    w, dim, train = export_report["general_weight"], export_report["dim"], export_report["train"]
    cfg = train["config"]
    rule = bench["rule"]
    picked = rows["general"]["picked_rule"]
    held = ", ".join(cfg.get("held_out", [])) or "none"
    lines = [
        "# checkout-embedder (distilled, one trunk)",
        "",
        "Turns an item crop into a vector for the product catalog (FAISS, cosine). One EfficientNet-Lite0 trunk,"
        " fine-tuned on grocery photos while a distillation loss keeps its features close to the frozen ImageNet"
        " ones (learning without forgetting), so products nobody trained on keep the general features.",
        "",
        "## Contract",
        "",
        f"- input `crops`: uint8 [N, {cfg['size']}, {cfg['size']}, 3] BGR, letterboxed (keep aspect, pad grey"
        " 127: `stream.stages.embed.letterbox`).",
        "- preprocessing in the graph: BGR->RGB, (x - 127) / 128.",
        f"- output `embeddings`: float32 [N, {dim}], L2-normalised.",
        "- metadata: name, version, input_size, embedding_dim, normalisation, crop_preprocessing, training_data,"
        " recipe, backbone, distillation, combination.",
        "",
        "## Model and training",
        "",
        f"- EfficientNet-Lite0 trunk -> global average pool (1280) -> two parts: a linear projection to"
        f" {cfg['dim']}-d (CosFace, s={cfg['scale']}, margin={cfg['margin']}, one proxy per product) and the"
        " pooled 1280-d features themselves. Each L2-normalised, concatenated as [sqrt(1-w) proj, sqrt(w)"
        f" pooled] with w = {w:g}: the cosine of two embeddings is {1 - w:g} x the projection's cosine +"
        f" {w:g} x the pooled features' cosine. One trunk: the CPU cost of the previous embedder.",
        f"- Learning without forgetting: a frozen ImageNet Lite0 teacher sees every training crop; loss = CosFace"
        f" + {cfg['distill']:g} x (1 - cosine(student pooled, teacher pooled) + squared difference of the batch's"
        f" cosine-similarity matrices) + {cfg['distill_head']:g} x (squared difference of the projection's and"
        " the teacher's batch cosine-similarity matrices).",
        f"- Stem and blocks 0-{cfg['freeze_upto']} frozen (ImageNet BN statistics kept); AdamW, lr backbone"
        f" {cfg['lr_backbone']} / head {cfg['lr_head']}, cosine schedule over a {cfg['minutes']:g}-minute"
        f" wall-clock budget; {cfg['size']} px input; augmentation as the previous model plus"
        + (
            " motion blur, partial views cut by the frame edge and tiny upsampled crops (video crops)."
            if cfg.get("video_aug")
            else "."
        )
        + "",
        f"- Ran {train['steps']} steps of batch {cfg['batch']} ({train['epochs']} epochs) in {train['minutes']} min"
        f" on 1 CPU thread of a shared 2-core machine; final loss {train['final_loss']}, distillation part"
        f" {train['final_distill_loss']}, proxy accuracy {train['final_train_acc']}.",
        f"- Data: Grocery Store Dataset (Klasson et al., WACV 2019, MIT) `train/` photos + `iconic/` packshots of"
        f" {train['n_products']} products ({train['n_images']} photos, {train['n_iconic']} packshots). Held out"
        f" of training, so that the held-out columns measure products it never saw: {held}.",
        f"- w was picked on the held-out grocery products only ({', '.join(c for c, _ in COLUMNS[2:5])}), never on"
        " the top-down set: see 'Choosing w'.",
        "",
        "## Measured",
        "",
        "`python3 benchmarks/bench_recognition.py` (every photo embedded whole through the runtime's Embedder;"
        " a product's score is its best catalog photo). Top-1, queries in parentheses. Held-out products are"
        " unseen by this model; the previous model (trained on all 81 products) has seen them. Top-down: 8 real"
        " products nobody trained on, catalog = first 5 photos of each by file name, queries = the other 296"
        " (validation only).",
        "",
        *_closed_table(rows, GENERAL_ROWS),
        "",
        "### Open set",
        "",
        *_open_section(
            rows, rule, picked, GENERAL_ROWS, "; picked for this model on the two grocery splits, never on top-down"
        ),
        "",
        "### Choosing w",
        "",
        "The trained trunk's two parts combined at several w (exact: the exported graph computes the same"
        " cosines); w = 0 is the projection alone, w = 1 the distilled pooled features alone:",
        "",
        *_selection_table(selection),
        "",
        f"torch vs ONNX Runtime (random pixels): min cosine {export_report['torch_vs_ort']['min_cosine']:.6f},"
        f" max |diff| {export_report['torch_vs_ort']['max_abs']:.2e}.",
    ]
    if latency:
        lines += _latency_section(latency, "general", "previous embedder", "previous embedder")
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "python -m export embedder --out BASE224 --frozen --size 224     # ImageNet baselines",
        "python -m export embedder --out BASE288 --frozen --size 288",
        f"python -m export.embedder train --out RUN --minutes {cfg['minutes']:g} --distill {cfg['distill']:g}"
        f" --distill-head {cfg['distill_head']:g}" + (" --video-aug" if cfg.get("video_aug") else ""),
        "python -m export.embedder export --checkpoint RUN/checkpoint.pt --general-weight 0.5 --out SWEEP",
        "python3 benchmarks/bench_recognition.py --split-general SWEEP/embedder.onnx   # the w sweep",
        f"python -m export.embedder export --checkpoint RUN/checkpoint.pt --general-weight {w:g} --out OUT",
        "python3 benchmarks/bench_recognition.py frozen224=BASE224/embedder.onnx frozen288=BASE288/embedder.onnx"
        " finetuned=OLD.onnx general=OUT/embedder.onnx",
        "```",
        "",
        "## Previous model: the fine-tuned features alone (v1.0.0)",
        "",
        "Its card, unchanged.",
        "",
    ]
    old = previous.split("\n## File", maxsplit=1)[0].strip().splitlines()
    lines += ["#" + ln if ln.startswith("#") else ln for ln in old[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.combined_card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--onnx", type=Path, required=True, help="combined ONNX (export.json beside it)")
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--selection", type=Path, nargs="+", required=True, metavar="LABEL=JSON")
    p.add_argument("--latency", type=Path)
    p.add_argument("--previous-card", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true", help="print the card, ship nothing")
    p.add_argument(
        "--general", action="store_true", help="the one-trunk distilled embedder (python -m export.embedder export)"
    )
    args = p.parse_args(argv)
    export_json = args.onnx.with_name("export.json")
    selection = []
    for spec in args.selection:
        label, _, path = str(spec).partition("=")
        if not path or not Path(path).is_file():
            p.error(f"--selection wants LABEL=JSON (an existing file), got {spec}")
        selection.append({"label": label, **json.loads(Path(path).read_text())})
    needed = [export_json, args.bench, args.previous_card, *([args.latency] if args.latency else [])]
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:
        p.error(f"missing input file(s): {', '.join(missing)}")
    bench = json.loads(args.bench.read_text())
    row = "general" if args.general else "combined"
    if row not in bench["results"]:
        p.error(f"{args.bench} has no {row!r} row (run bench_recognition.py {row}=OUT/embedder.onnx ...)")
    latency = json.loads(args.latency.read_text()) if args.latency else None
    make = general_card if args.general else card
    text = make(json.loads(export_json.read_text()), bench, selection, latency, args.previous_card.read_text())
    if args.dry_run:
        print(text)
        return 0
    print(f"shipped {ship_model(args.onnx, 'embedder', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
