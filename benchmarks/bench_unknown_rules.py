"""Candidate unknown rules against the runtime's, on bench_recognition's open-set protocols.

    python3 benchmarks/bench_unknown_rules.py [MODEL.onnx] [--out benchmarks/results/unknown_rules.json]

The protocols and embeddings are bench_recognition's (``open_grocery_iconic`` / ``open_grocery_train``:
61 of the grocery products as packshots / train photos, every val photo a query; ``open_topdown`` /
``open_topdown_crops``: 6 of the 8 top-down products, 5 photos each, all 28 pairs left out in turn; whole
photos in the catalog, as the default config builds it). Every rule is "unknown when any of its features
is below its parameter"; the features, each computed per query from its best product ``b`` and score ``s``:

- ``best``: s (the runtime's ``classify.unknown_threshold``);
- ``gap_mean4`` / ``gap_mean8``: s - mean of the next 4 / 8 products' scores (the runtime's margin over
  its cohort, ``UnknownRule.standout``, at cohort 4 / 8);
- ``ratio_mean4``: (1 - mean next 4) / (1 - s): the margin as a ratio of cosine distances;
- ``zq10``: (s - mean next 10) / std next 10: the query's z-score against its own cohort;
- ``zp``: (s - mu_b) / sigma_b, mu/sigma: product b's scores on every other product's catalog photo
  (product-side cohort normalisation, from the catalog alone);
- ``snorm``: (zq10 + z of s against the top 10 of b's scores on the other products) / 2 (adaptive s-norm);
- ``over_top3``: s - mean of b's scores on its 3 most similar other products in the catalog: a
  per-product threshold, the product's own crowding plus the parameter;
- ``own10``: s - 10th percentile of b's leave-one-out nearest-own-photo cosine (each product's own photo
  spread; products with one photo take the catalog's median, none at all when no product has two).

Per split it prints each rule's frontier (most absent products rejected while present ones named right
stay at or above a level, every parameter free: no rule beats another there by tuning), then single
settings chosen on the grocery splits only (worse grocery split: best (rejected + named right) / 2; named
right at least the runtime default's; rejected at least 90 %) with the top-down splits reported at them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_recognition import PICK_ON, RESULTS, _index, _mean_figures, _shown, open_protocols
from recognition_sets import Embedded, embed_all

from stream.config import load_config
from stream.eval.openset import open_set_figures, product_scores
from stream.stages.classify import UnknownRule

LEVELS = {  # present named right, per split: its closed-set ceiling is 86.7 / 86.7 / 83.6 / 74.6 % (shipped)
    "open_grocery_iconic": (0.85, 0.82, 0.80, 0.75, 0.70),
    "open_grocery_train": (0.85, 0.82, 0.80, 0.75, 0.70),
    "open_topdown": (0.80, 0.78, 0.75, 0.70, 0.65),
    "open_topdown_crops": (0.70, 0.65, 0.60, 0.55, 0.50),
}
BEST = tuple(round(0.3 + 0.025 * i, 3) for i in range(18))  # 0.3 .. 0.725
EPS = 1e-6


@dataclass(frozen=True)
class Split:
    """One open split: product scores [Q, P] sorted best first, their order, truth, catalog statistics."""

    ranked: np.ndarray
    order: np.ndarray
    truth: np.ndarray
    photo_scores: np.ndarray  # [G, P]: each catalog photo's score for every product (its own: leave-one-out)
    owner: np.ndarray  # [G]


def split(gallery: Embedded, queries: Embedded) -> Split:
    names = sorted(set(gallery.products))
    owner = _index(gallery.products, names)
    scores = product_scores(queries.vectors, gallery.vectors, owner, len(names)).astype(np.float64)
    sims = gallery.vectors.astype(np.float64) @ gallery.vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    photo = np.stack([sims[:, owner == p].max(axis=1) for p in range(len(names))], axis=1)
    order = np.argsort(-scores, axis=1)
    return Split(np.take_along_axis(scores, order, 1), order, _index(queries.products, names), photo, owner)


def features(sp: Split, rule: UnknownRule) -> dict[str, np.ndarray]:
    """Every candidate feature per query (higher: more trusted)."""
    r, b, photo, owner = sp.ranked, sp.order[:, 0], sp.photo_scores, sp.owner
    s, n_products = r[:, 0], r.shape[1]
    # product p's best score on each other product c (over c's photos); -inf on the diagonal
    other = np.stack([photo[owner == c].max(axis=0) for c in range(n_products)], axis=1)
    np.fill_diagonal(other, -np.inf)
    crowd = -np.sort(-other, axis=1)
    imp = [photo[owner != p, p] for p in range(n_products)]
    mu, sd = np.array([x.mean() for x in imp]), np.array([x.std() + EPS for x in imp])
    top = crowd[:, : min(10, n_products - 1)]
    own = [photo[owner == p, p] for p in range(n_products)]
    spread = np.array([np.percentile(x, 10) if len(x) > 1 else np.nan for x in own])
    fallback = float(np.nanmedian(spread)) if np.isfinite(spread).any() else -np.inf
    spread = np.where(np.isfinite(spread), spread, fallback)
    coh10 = r[:, 1:11]
    zq = (s - coh10.mean(1)) / (coh10.std(1) + 1e-3)
    return {
        "best": s,
        "gap_mean4": UnknownRule(threshold=rule.threshold, cohort=4).standout(r),
        "gap_mean8": UnknownRule(threshold=rule.threshold, cohort=8).standout(r),
        "ratio_mean4": (1 - r[:, 1:5].mean(1)) / np.maximum(1 - s, EPS),
        "zq10": zq,
        "zp": (s - mu[b]) / sd[b],
        "snorm": 0.5 * (zq + (s - top.mean(1)[b]) / (top.std(1)[b] + 1e-3)),
        "over_top3": s - crowd[:, : min(3, n_products - 1)].mean(1)[b],
        "own10": s - spread[b],
    }


def _grid(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in np.arange(lo, hi + step / 2, step))


FAMILIES: dict[str, tuple[tuple[str, tuple[float, ...]], ...]] = {
    "runtime: best + gap_mean4": (("best", BEST), ("gap_mean4", _grid(0, 0.4, 0.01))),
    "best + gap_mean8": (("best", BEST), ("gap_mean8", _grid(0, 0.4, 0.01))),
    "best + ratio_mean4": (("best", BEST), ("ratio_mean4", _grid(1, 3, 0.02))),
    "best + zq10": (("best", BEST), ("zq10", _grid(0, 12, 0.2))),
    "best + zp": (("best", BEST), ("zp", _grid(0, 8, 0.1))),
    "best + snorm": (("best", BEST), ("snorm", _grid(-2, 12, 0.2))),
    "best + over_top3": (("best", BEST), ("over_top3", _grid(-0.1, 0.35, 0.01))),
    "best + own10": (("best", BEST), ("own10", _grid(-0.4, 0.2, 0.01))),
    "best + gap_mean4 + over_top3": (
        ("best", BEST),
        ("gap_mean4", _grid(0, 0.3, 0.02)),
        ("over_top3", _grid(-0.1, 0.3, 0.02)),
    ),
    "best + gap_mean4 + own10": (
        ("best", BEST),
        ("gap_mean4", _grid(0, 0.3, 0.02)),
        ("own10", _grid(-0.3, 0.1, 0.02)),
    ),
}

Figures = dict[str, tuple[float, float]]  # split -> (absent rejected, present named right)


def sweep(
    data: dict[str, list[tuple[Split, dict[str, np.ndarray]]]], family: tuple[tuple[str, tuple[float, ...]], ...]
) -> list[tuple[tuple[float, ...], Figures]]:
    """Every grid point of ``family`` -> its figures on every split (averaged over a protocol's splits)."""
    names = [f for f, _ in family]
    out = []
    for params in itertools.product(*(g for _, g in family)):
        figs: Figures = {}
        for key, splits in data.items():
            rows = []
            for sp, feats in splits:
                rejected = np.any([feats[f] < v for f, v in zip(names, params, strict=True)], axis=0)
                rows.append(open_set_figures(sp.order[:, 0], rejected, sp.truth))
            m = _mean_figures(rows)
            figs[key] = (m["unknown_rejected"], m["known_correct"])
        out.append((tuple(float(p) for p in params), figs))
    return out


def frontier(rows: list[tuple[tuple[float, ...], Figures]], key: str) -> list[float | None]:
    """Per level of ``LEVELS[key]``: the most absent rejected with present named right at or above it."""
    out: list[float | None] = []
    for level in LEVELS[key]:
        ok = [f[key][0] for _, f in rows if f[key][1] >= level - 1e-9]
        out.append(max(ok) if ok else None)
    return out


def picks(rows: list[tuple[tuple[float, ...], Figures]], default_right: float) -> dict[str, Any]:
    """Single settings chosen on the grocery splits (``PICK_ON``) only."""

    def worst(f: Figures, i: int) -> float:
        return min(f[k][i] for k in PICK_ON)

    chosen: dict[str, tuple[tuple[float, ...], Figures] | None] = {
        "balanced": max(rows, key=lambda r: (min((r[1][k][0] + r[1][k][1]) / 2 for k in PICK_ON), worst(r[1], 1)))
    }
    ok = [r for r in rows if worst(r[1], 1) >= default_right - 1e-9]
    chosen["right>=default"] = max(ok, key=lambda r: (worst(r[1], 0), worst(r[1], 1))) if ok else None
    ok = [r for r in rows if worst(r[1], 0) >= 0.9 - 1e-9]
    chosen["rejected>=90"] = max(ok, key=lambda r: (worst(r[1], 1), worst(r[1], 0))) if ok else None
    return {
        tag: None
        if r is None
        else {"params": list(r[0]), **{k: {"unknown_rejected": v[0], "known_correct": v[1]} for k, v in r[1].items()}}
        for tag, r in chosen.items()
    }


def _pct(v: float | None) -> str:
    return f"{v * 100:6.1f}" if v is not None else "     -"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=Path, default=ROOT / "stream" / "models" / "embedder.onnx")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "checkout-stream" / "bench_recognition")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "unknown_rules.json")
    args = p.parse_args(argv)
    cfg = load_config()
    rule = UnknownRule.from_config(cfg.classify)
    e = embed_all(args.model, args.cache, args.threads)
    data: dict[str, list[tuple[Split, dict[str, np.ndarray]]]] = {}
    for key, pairs in open_protocols(e, item_views=False).items():
        data[key] = [(sp, features(sp, rule)) for sp in (split(g, q) for g, q in pairs)]
    default: Figures = {}
    for key, per_split in data.items():
        m = _mean_figures([open_set_figures(sp.order[:, 0], rule.rejected(sp.ranked), sp.truth) for sp, _ in per_split])
        default[key] = (m["unknown_rejected"], m["known_correct"])
    default_right = min(default[k][1] for k in PICK_ON)
    results: dict[str, Any] = {}
    for name, family in FAMILIES.items():
        rows = sweep(data, family)
        results[name] = {
            "features": [f for f, _ in family],
            "frontier": {k: frontier(rows, k) for k in data},
            "picked": picks(rows, default_right),
        }
    lines = [
        f"runtime default ({rule.describe()['rule']}, threshold {rule.threshold}, margin {rule.margin}): "
        + "  ".join(f"{k[5:]} {v[0] * 100:.1f}/{v[1] * 100:.1f}" for k, v in default.items()),
        "",
        "frontier per split: most absent products rejected (%) while present named right >= each level",
    ]
    for key in data:
        lines.append(f"{key[5:]:<32}" + "".join(f"{'>=' + str(round(lv * 100)):>7}" for lv in LEVELS[key]))
        for name, r in results.items():
            lines.append(f"  {name:<30}" + "".join(f" {_pct(v)}" for v in r["frontier"][key]))
    lines += ["", "single settings picked on the grocery splits (absent rejected / present named right, %)"]
    for name, r in results.items():
        for tag, pk in r["picked"].items():
            if pk is None:
                lines.append(f"  {name:<30} {tag:<15} none")
                continue
            figs = "  ".join(
                f"{k[5:]} {pk[k]['unknown_rejected'] * 100:5.1f}/{pk[k]['known_correct'] * 100:5.1f}" for k in data
            )
            lines.append(f"  {name:<30} {tag:<15} {str(tuple(pk['params'])):<22} {figs}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": _shown(args.model),
        "default": {"rule": rule.describe(), **{k: list(v) for k, v in default.items()}},
        "levels": LEVELS,
        "families": results,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {_shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
