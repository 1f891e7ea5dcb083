"""export.combined_card: every number in the card comes from the given result files, the old card is kept."""

from __future__ import annotations

from export.combined_card import COLUMNS, OPEN, card


def _bench_row(top1: float, w: float | None = None) -> dict:
    row: dict = {c: {"top1": top1, "n_queries": 10} for c, _ in COLUMNS}
    figures = {"unknown_rejected": 0.9, "known_correct": 0.8, "known_rejected": 0.1}
    row.update({k: dict(figures) for k, _ in OPEN})
    row["picked_rule"] = {"threshold": 0.4, "margin": 0.2, **{k: dict(figures) for k, _ in OPEN}}
    if w is not None:
        row["w"] = w
    return row


def test_card_holds_the_measured_rows_and_the_previous_card() -> None:
    bench = {
        "rule": {"threshold": 0.5, "margin": 0.1, "cohort": 4},
        "results": {"finetuned": _bench_row(0.804), "combined": _bench_row(0.912)},
    }
    selection = [{"label": "all products", "results": {"w=0.5": _bench_row(0.5, w=0.5)}}]
    latency = {
        "onnxruntime": "1.0",
        "rows": [
            {"model": "embedder", "precision": "fp32", "threads": 1, "batch": 1, "median_ms": 20.0, "reps": 5},
            {"model": "combined", "precision": "fp32", "threads": 1, "batch": 1, "median_ms": 30.0, "reps": 5},
        ],
    }
    export = {"w": 0.5, "dim": 1408, "shared_blocks": 5, "torch_vs_ort": {"min_cosine": 1.0, "max_abs": 1e-7}}
    previous = "# checkout-embedder\n\n## Measured\n\nold figure 88.5 %\n\n## File\n\n- sha"
    text = card(export, bench, selection, latency, previous)
    assert "91.2 % (10)" in text and "80.4 % (10)" in text
    assert "| fp32 | 1 | 1 | 20.0 | 30.0 | 1.50x |" in text
    assert "### Measured" in text and "old figure 88.5 %" in text and "- sha" not in text
    assert "threshold 0.4, margin 0.2" in text
