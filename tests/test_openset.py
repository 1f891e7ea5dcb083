"""Closed/open-set figures (stream.eval.openset), the runtime's unknown rule, and `eval catalog`'s
open-set report with a fake embedder (queries of products absent from the gallery)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.config import load_config
from stream.eval.catalog import eval_catalog, format_table
from stream.eval.openset import ABSENT, closed_set, open_set_figures, product_scores, threshold_sweep
from stream.stages.classify import UnknownRule
from tests.test_catalog import FakeEmbedder, cfg, random_images, write_photos


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("n_queries", [0, 1, 7])
def test_product_scores_are_the_best_photo_of_each_product(n_queries: int) -> None:
    rng = np.random.default_rng(n_queries)
    gallery, queries = _unit(rng, 9), _unit(rng, n_queries)
    owner = np.array([0, 0, 1, 2, 2, 2, 1, 0, 2])
    got = product_scores(queries, gallery, owner, 3)
    assert got.shape == (n_queries, 3)
    for q in range(n_queries):
        for p in range(3):
            assert got[q, p] == pytest.approx(
                max(float(queries[q] @ gallery[i]) for i in np.flatnonzero(owner == p)), abs=1e-6
            )


@pytest.mark.parametrize(
    ("pred", "rejected", "truth", "expected"),
    [
        ([], [], [], (None, None, None)),  # empty first
        ([0, 1], [False, False], [0, 1], (None, 1.0, 0.0)),  # closed set: nothing absent
        ([0, 1], [True, False], [ABSENT, ABSENT], (0.5, None, None)),  # nothing present
        ([0, 1, 1, 0], [False, True, False, True], [0, 1, 0, ABSENT], (1.0, 1 / 3, 1 / 3)),
    ],
)
def test_open_set_figures(pred: list, rejected: list, truth: list, expected: tuple) -> None:
    f = open_set_figures(np.array(pred, int), np.array(rejected, bool), np.array(truth, int))
    got = (f["unknown_rejected"], f["known_correct"], f["known_rejected"])
    assert got == pytest.approx(expected) if all(e is not None for e in expected) else got == expected


def test_threshold_sweep_trades_rejection_for_recall() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([0, 1, 2, ABSENT, ABSENT] * 10)
    conf = np.where(truth >= 0, 0.7, 0.4) + rng.normal(0, 0.1, len(truth))
    rows = threshold_sweep(conf.astype(np.float32), np.maximum(truth, 0), truth, [0.0, 0.5, 1.1])
    assert [r["unknown_rejected"] for r in rows] == sorted(r["unknown_rejected"] for r in rows)
    assert rows[0]["known_correct"] == 1.0 and rows[0]["unknown_rejected"] == 0.0
    assert rows[-1]["unknown_rejected"] == 1.0 and rows[-1]["known_correct"] == 0.0


def test_closed_set_ignores_absent_queries() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.7]], np.float32)
    r = closed_set(scores, np.array([0, 0, ABSENT]))
    assert r == {"top1": 0.5, "top5": 1.0, "n_queries": 2}


def test_unknown_rule_threshold_alone() -> None:
    rule = UnknownRule(threshold=0.5)
    scores = np.array([[0.2, 0.49], [0.51, 0.1]], np.float32)
    best, rejected, ranked = rule.decide(scores)
    assert best.tolist() == [1, 0] and rejected.tolist() == [True, False]
    assert ranked[:, 0].tolist() == pytest.approx([0.49, 0.51])
    assert rule.rejects((0.49, 0.1)) and not rule.rejects((0.5, 0.49))


@pytest.mark.parametrize(
    ("scores", "unknown"),
    [
        ((), True),  # nothing found: unknown
        ((0.9,), False),  # one product: no cohort, only the threshold
        ((0.2,), True),
        ((0.9, 0.5, 0.5, 0.5, 0.5), False),  # stands 0.4 above the next four
        ((0.9, 0.85, 0.8, 0.8, 0.75), True),  # resembles several products alike: absent
        ((0.9, 0.85, 0.8, 0.8, 0.75, 0.1, 0.1), True),  # only the next ``cohort`` count
        ((0.9, 0.6), False),  # fewer than ``cohort`` others: their mean
    ],
)
def test_unknown_rule_margin_over_the_cohort(scores: tuple[float, ...], unknown: bool) -> None:
    assert UnknownRule(threshold=0.3, margin=0.2, cohort=4).rejects(scores) is unknown


def test_unknown_rule_margin_zero_is_off_and_sweeps_override() -> None:
    rule = UnknownRule(threshold=0.3, margin=0.0, cohort=2)
    ranked = np.array([[0.9, 0.89, 0.88], [0.25, 0.0, 0.0]])
    assert rule.rejected(ranked).tolist() == [False, True]
    assert rule.rejected(ranked, margin=0.1).tolist() == [True, True]
    assert rule.rejected(ranked, threshold=0.0).tolist() == [False, False]
    assert rule.k == 3


def test_unknown_rule_reads_its_config() -> None:
    c = load_config().classify
    rule = UnknownRule.from_config(c)
    assert (rule.threshold, rule.margin, rule.cohort) == (c.unknown_threshold, c.unknown_margin, c.unknown_cohort)


@pytest.mark.parametrize("absent", [0, 2])
def test_eval_catalog_reports_the_open_set_when_products_are_absent(tmp_path: Path, absent: int) -> None:
    images = random_images(3, products=5, per=3)
    names = sorted(images)
    gallery = write_photos(tmp_path / "g", {p: images[p][:1] for p in names[absent:]})
    queries = write_photos(tmp_path / "q", {p: images[p] for p in names})
    c = load_config()
    result = eval_catalog(gallery, queries, c.classify, cfg(), progress=False, embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert result["n_queries"] == 3 * (5 - absent)
    assert result["skipped_queries"] == 3 * absent
    assert result["top1"] >= 1 / 3  # each product's own first photo is a query
    if not absent:
        assert result["open_set"] is None
        return
    o = result["open_set"]
    assert o["n_absent_queries"] == 3 * absent and o["n_known_queries"] == 3 * (5 - absent)
    assert o["threshold"] == c.classify.unknown_threshold
    assert 0.0 <= o["unknown_rejected"] <= 1.0 and 0.0 <= o["known_correct"] <= 1.0
    sweep = o["threshold_sweep"]
    assert sweep[0]["unknown_rejected"] == 0.0 and sweep[-1]["known_correct"] == 0.0
    assert [r["margin"] for r in o["margin_sweep"]][:2] == [0.0, 0.01]
    assert "open set" in format_table(result)
