"""Metric regression: the whole pipeline (shipped models) on a declared list of rendered scenes must
stay at least as good as the figures recorded in tests/expected_scene_metrics.json: in total exactly
(items found, duplicate and spurious tracks, correct labels, recall, label accuracy), and seed by seed
within ``SEED_SLACK`` (one tie decided another way on another CPU must not fail CI; a real regression
shows in the totals).

When a change makes these better, re-record with ``python3 benchmarks/bench_scenes.py --seeds ...
--seconds ...`` (the seeds and length in the JSON) and copy its rows here: a worse figure fails CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.config import load_config
from stream.eval.scenes import score_seeds
from stream.sources.demo import demo_photos
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder

EXPECTED = json.loads((Path(__file__).parent / "expected_scene_metrics.json").read_text())
SEED_SLACK = 1
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def measured() -> dict:
    cfg = load_config()
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.from_images(demo_photos(), embedder, cfg.catalog)
    return score_seeds(EXPECTED["seeds"], EXPECTED["seconds"], embedder, catalog)


def test_every_declared_seed_is_scored(measured: dict) -> None:
    assert [r["seed"] for r in measured["rows"]] == EXPECTED["seeds"] == [r["seed"] for r in EXPECTED["rows"]]


@pytest.mark.parametrize("seed", EXPECTED["seeds"])
def test_no_seed_gets_worse(measured: dict, seed: int) -> None:
    got = next(r for r in measured["rows"] if r["seed"] == seed)
    want = next(r for r in EXPECTED["rows"] if r["seed"] == seed)
    assert got["items"] == want["items"], "the scene itself changed: re-record the expected figures"
    assert got["found"] >= want["found"] - SEED_SLACK, (got, want)
    assert got["duplicates"] <= want["duplicates"] + SEED_SLACK, (got, want)
    assert got["spurious"] <= want["spurious"] + SEED_SLACK, (got, want)
    assert got["correct_labels"] >= want["correct_labels"] - SEED_SLACK, (got, want)


def test_totals_meet_the_recorded_figures(measured: dict) -> None:
    got, want = measured["total"], EXPECTED["total"]
    assert got["found"] >= want["found"] and got["correct_labels"] >= want["correct_labels"], (got, want)
    assert got["duplicates"] <= want["duplicates"] and got["spurious"] <= want["spurious"], (got, want)
    assert measured["recall"] >= EXPECTED["recall"] - 1e-9
    assert measured["label_accuracy"] >= EXPECTED["label_accuracy"] - 1e-9
