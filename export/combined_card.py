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
)
OPEN = (
    ("open_grocery_iconic", "grocery, 61 packshots"),
    ("open_grocery_train", "grocery, train photos of 61"),
    ("open_topdown", "top-down, 6 of 8 (28 splits)"),
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f} %"


def _closed_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| model | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for key, label in ROWS.items():
        if key in rows:
            r = rows[key]
            cells = " | ".join(f"{_pct(r[c]['top1'])} ({r[c]['n_queries']})" for c, _ in COLUMNS)
            lines.append(f"| {label} | {cells} |")
    return lines


def _open_table(rows: dict[str, dict[str, Any]], at: str) -> list[str]:
    """``at``: "default" (the config the bench ran with) or "picked" (bench's pick_rule)."""
    lines = ["| model | split | absent rejected | present named right | present rejected |", "|---|---|---|---|---|"]
    for key, label in ROWS.items():
        if key not in rows:
            continue
        for split, name in OPEN:
            o = rows[key][split] if at == "default" else rows[key]["picked_rule"][split]
            lines.append(
                f"| {label} | {name} | {_pct(o['unknown_rejected'])} | {_pct(o['known_correct'])} |"
                f" {_pct(o['known_rejected'])} |"
            )
    return lines


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


def _latency_table(latency: dict[str, Any]) -> list[str]:
    rows = {(r["model"], r["precision"], r["threads"], r["batch"]): r["median_ms"] for r in latency["rows"]}
    lines = [
        "| precision | threads | batch | fine-tuned alone (ms) | combined (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for (model, prec, threads, batch), ms in sorted(rows.items()):
        if model != "combined":
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
        "Absent products must come out unknown. Splits: grocery, catalog = the packshots or train photos of"
        " 61 of 81 products (every 4th product by name left out), queries = all 296 val photos; top-down,"
        " the 5-photo catalog without 2 of the 8 products, all 28 pairs, averaged. Per photo (a track"
        " averages several crops at run time, which this does not credit).",
        "",
        f"At the default config (threshold {rule['threshold']}, margin {rule['margin']}, cohort {rule['cohort']}):",
        "",
        *_open_table(rows, "default"),
        "",
        "At the rule each model's figures pick on the grocery splits alone (bench_recognition `pick_rule`: the"
        " (threshold, margin) whose worse grocery split has the best (rejected + named right) / 2); for this"
        f" model threshold {picked['threshold']}, margin {picked['margin']}:",
        "",
        *_open_table(rows, "picked"),
        "",
        "### Choosing w",
        "",
        "Both fine-tuned models (all products and held out) combined with the ImageNet features at several w"
        " (`bench_recognition.py --sweep`; exact: the combined ONNX computes the same cosines):",
        "",
        *_selection_table(selection),
        "",
        f"torch vs ONNX Runtime (random pixels): min cosine {export_report['torch_vs_ort']['min_cosine']:.6f},"
        f" max |diff| {export_report['torch_vs_ort']['max_abs']:.2e}.",
    ]
    if latency:
        reps = latency["rows"][0]["reps"]
        lines += [
            "",
            f"CPU latency beside the fine-tuned model alone (ONNX Runtime {latency['onnxruntime']},"
            f" median of {reps} interleaved rounds, shared 2-core machine under load: indicative):",
            "",
            *_latency_table(latency),
        ]
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
    if "combined" not in bench["results"]:
        p.error(f"{args.bench} has no 'combined' row (run bench_recognition.py combined=OUT/embedder.onnx ...)")
    latency = json.loads(args.latency.read_text()) if args.latency else None
    text = card(json.loads(export_json.read_text()), bench, selection, latency, args.previous_card.read_text())
    if args.dry_run:
        print(text)
        return 0
    print(f"shipped {ship_model(args.onnx, 'embedder', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
