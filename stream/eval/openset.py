"""Closed- and open-set recognition figures from embeddings, with the catalog's own scoring.

A product's score for a query is its best photo's cosine similarity (``Catalog.search``). Open set:
queries whose product is absent from the gallery must come out unknown, present ones named right.
``rule_figures`` applies the runtime's rule (``stream.stages.classify.UnknownRule``) at its setting and
sweeps it (its margin at its threshold, and its threshold alone) so a user can pick an operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.stages.classify import UnknownRule

ABSENT = -1
THRESHOLDS = tuple(round(0.02 * i, 2) for i in range(-10, 52))  # cosine -0.2 .. 1.02 (rejects all)
MARGINS = tuple(round(0.01 * i, 2) for i in range(0, 61))  # 0 (off) .. 0.6


def product_scores(queries: np.ndarray, gallery: np.ndarray, owner: np.ndarray, n_products: int) -> np.ndarray:
    """float32 [Q, P]: for each query, each product's best-photo cosine (gallery rows owned by ``owner``)."""
    sims = queries.astype(np.float32) @ gallery.astype(np.float32).T
    out = np.full((len(queries), n_products), -np.inf, dtype=np.float32)
    for p in range(n_products):
        cols = owner == p
        if cols.any():
            out[:, p] = sims[:, cols].max(axis=1)
    return out


def closed_set(scores: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """top-1 / top-5 of queries whose product is in the gallery (``truth`` >= 0)."""
    known = truth >= 0
    s, t = scores[known], truth[known]
    if len(t) == 0:
        return {"top1": 0.0, "top5": 0.0, "n_queries": 0}
    order = np.argsort(-s, axis=1)[:, :5]
    return {
        "top1": float((order[:, 0] == t).mean()),
        "top5": float((order == t[:, None]).any(1).mean()),
        "n_queries": int(len(t)),
    }


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best product index, best score, second-best score) per query; second is -1 with one product."""
    order = np.argsort(-scores, axis=1)
    rows = np.arange(len(scores))
    best = scores[rows, order[:, 0]]
    second = scores[rows, order[:, 1]] if scores.shape[1] > 1 else np.full(len(scores), -1.0, np.float32)
    return order[:, 0], best, second


def open_set_figures(pred: np.ndarray, rejected: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """unknown_rejected (share of absent-product queries called unknown), known_correct (present ones
    named right, not rejected), known_rejected (present ones called unknown), with query counts."""
    absent, known = truth == ABSENT, truth >= 0
    return {
        "unknown_rejected": float(rejected[absent].mean()) if absent.any() else None,
        "known_correct": float((~rejected & (pred == truth))[known].mean()) if known.any() else None,
        "known_rejected": float(rejected[known].mean()) if known.any() else None,
        "n_absent_queries": int(absent.sum()),
        "n_known_queries": int(known.sum()),
    }


def rule_figures(rule: UnknownRule, ranked: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Open-set figures at ``rule`` plus ``margin_sweep`` (its margin varied at its threshold) and
    ``threshold_sweep`` (its threshold varied, margin off). ``ranked``: each query's best product scores,
    best first [Q, >= 1]; ``pred``: the best product's index; ``truth``: ABSENT or the product index."""
    at_rule = open_set_figures(pred, rule.rejected(ranked), truth)
    return {
        **at_rule,
        **rule.describe(),
        "margin_sweep": [
            {"margin": m, **open_set_figures(pred, rule.rejected(ranked, margin=m), truth)} for m in MARGINS
        ],
        "threshold_sweep": [
            {"threshold": t, **open_set_figures(pred, rule.rejected(ranked, threshold=t, margin=0.0), truth)}
            for t in THRESHOLDS
        ],
    }


def threshold_sweep(
    confidence: np.ndarray, pred: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """``open_set_figures`` when a query is rejected below each threshold of ``confidence``."""
    return [{"threshold": float(t), **open_set_figures(pred, confidence < t, truth)} for t in thresholds]
