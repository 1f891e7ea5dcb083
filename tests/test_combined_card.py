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


def test_general_card_holds_the_three_kinds_of_data_the_training_and_the_previous_card() -> None:
    from export.combined_card import general_card  # noqa: PLC0415

    bench = {
        "rule": {"threshold": 0.45, "margin": 0.1, "cohort": 4},
        "results": {"frozen288": _bench_row(0.895), "finetuned": _bench_row(0.804), "general": _bench_row(0.921)},
    }
    selection = [{"label": "held out", "results": {"w=0.5": _bench_row(0.5, w=0.5)}}]
    latency = {
        "onnxruntime": "1.0",
        "rows": [
            {"model": "embedder", "precision": "fp32", "threads": 1, "batch": 1, "median_ms": 20.0, "reps": 5},
            {"model": "general", "precision": "fp32", "threads": 1, "batch": 1, "median_ms": 21.0, "reps": 5},
        ],
    }
    config = {
        "size": 288, "dim": 128, "scale": 20.0, "margin": 0.15, "distill": 10.0, "distill_head": 1.0,
        "freeze_upto": 4, "lr_backbone": 3e-4, "lr_head": 3e-3, "minutes": 55.0, "batch": 32,
        "video_aug": True, "held_out": ["Lime"],
    }  # fmt: skip
    train = {
        "steps": 300, "epochs": 3.1, "minutes": 55.0, "final_loss": 0.9, "final_distill_loss": 0.2,
        "final_train_acc": 0.8, "n_products": 71, "n_images": 2300, "n_iconic": 71, "config": config,
    }  # fmt: skip
    export = {"general_weight": 0.6, "dim": 1408, "torch_vs_ort": {"min_cosine": 1.0, "max_abs": 1e-7}, "train": train}
    previous = "# checkout-embedder\n\n## Measured\n\nold figure 88.5 %\n\n## File\n\n- sha"
    text = general_card(export, bench, selection, latency, previous)
    assert "92.1 % (10)" in text and "89.5 % (10)" in text and "80.4 % (10)" in text
    assert "| fp32 | 1 | 1 | 20.0 | 21.0 | 1.05x |" in text
    assert "w = 0.6" in text and "float32 [N, 1408]" in text and "held out of training" in text.lower()
    assert "stream.stages.embed.letterbox" in text and "stream.embed.letterbox" not in text
    assert "### Measured" in text and "old figure 88.5 %" in text and "- sha" not in text
