"""The embedder's model card is written from measured results only: every figure in it comes from
the eval JSONs, and the unseen-product verdict follows the numbers, whichever way they go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.embedder_card import card, main

pytestmark = pytest.mark.export


def _eval(top1: float, held: float, unseen: float) -> dict:
    part = {
        "top1": top1,
        "top5": 0.99,
        "n_queries": 296,
        "n_products": 81,
        "held_out": {"top1": held, "n_queries": 50, "n_products": 10},
        "seen": {"top1": top1, "n_queries": 246, "n_products": 50},
        "per_product": {"Lime": held, "Kiwi": top1},
    }
    return {
        "input_size": 224,
        "dim": 128,
        "train_catalog": part,
        "iconic_catalog": part,
        "unseen_iconic": {"top1": unseen, "top5": 0.9, "n_queries": 382, "n_products": 81},
    }


def _report(tmp_path: Path, held_out: list[str]) -> dict:
    onnx = tmp_path / "embedder.onnx"
    cfg = {
        "held_out": held_out,
        "scale": 20.0,
        "margin": 0.15,
        "lr_backbone": 3e-4,
        "lr_head": 3e-3,
        "minutes": 40.0,
        "drop_connect": 0.1,
        "freeze_upto": 4,
        "size": 224,
        "dim": 128,
        "batch": 32,
    }
    (tmp_path / "checkpoint.json").write_text(json.dumps({"config": cfg}))
    return {
        "onnx": str(onnx),
        "torch_vs_ort": {"min_cosine": 1.0, "max_abs": 1e-7},
        "train": {
            "steps": 900,
            "epochs": 10.1,
            "minutes": 40.0,
            "final_loss": 0.3,
            "final_train_acc": 0.97,
            "n_products": 81,
            "n_images": 2640,
            "n_iconic": 81,
        },
    }


@pytest.mark.parametrize(("held", "verdict"), [(0.40, "better than"), (0.20, "WORSE than")])
def test_card_reports_measured_figures_and_an_honest_unseen_verdict(tmp_path: Path, held: float, verdict: str) -> None:
    shipped, heldout, base = _eval(0.873, 0.9, 0.9), _eval(0.80, held, held), _eval(0.55, 0.30, 0.30)
    text = card(_report(tmp_path, []), [("shipped", shipped)], None, held=heldout, base=base)
    assert "| shipped | train photos | 87.3 % |" in text
    assert "Trained on every product" in text and "--all-products" in text
    assert f"fine-tuned {held * 100:.1f} % is {verdict} the frozen baseline 30.0 %" in text
    assert "(382 queries)" in text and "224 px input" in text


def test_card_of_a_held_out_model_says_so(tmp_path: Path) -> None:
    text = card(_report(tmp_path, ["Lime"]), [("shipped", _eval(0.8, 0.7, 0.4))], None)
    assert "This shipped model is the held-out model" in text and "--all-products" not in text


def test_missing_inputs_are_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "embedder.onnx").write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main(["--onnx", str(tmp_path / "embedder.onnx"), "--eval", str(tmp_path / "eval.json"), "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "missing input file(s)" in err and "export.json" in err and "eval.json" in err
    assert "Traceback" not in err


def test_card_names_the_loss_it_was_trained_with(tmp_path: Path) -> None:
    report = _report(tmp_path, [])
    cfg_path = tmp_path / "checkpoint.json"
    cfg = json.loads(cfg_path.read_text())["config"]
    text = card(report, [("shipped", _eval(0.8, 0.7, 0.4))], None)
    assert "CosFace (normalised softmax, s=20.0, margin=0.15)" in text and "proxy accuracy" in text
    assert "--loss cosface --scale 20.0 --margin 0.15" in text  # configs from before the option: CosFace
    cfg_path.write_text(json.dumps({"config": cfg | {"loss": "supcon", "scale": 10.0, "per_product": 4}}))
    text = card(report, [("shipped", _eval(0.8, 0.7, 0.4))], None)
    assert "SupCon, temperature 0.1) over batches of 4 crops of each of 8 products" in text
    assert "in-batch nearest-neighbour accuracy" in text and "--loss supcon --scale 10.0 --per-product 4" in text
    assert "CosFace" not in text
