"""Recognition of seen and unseen products, closed and open set, for any embedder ONNX.

    python3 benchmarks/bench_recognition.py [NAME=MODEL.onnx ...] [--sweep FINETUNED.onnx IMAGENET.onnx]
        [--out benchmarks/results/recognition.json] [--plot benchmarks/results/recognition.png]

Default model: the shipped embedder. Every photo is embedded whole through the runtime's Embedder (cached
per model sha256 under --cache); a product's score is its best catalog photo's cosine (the runtime's
``Catalog.search``). Protocols:

- ``val_train`` / ``val_iconic``: grocery-store val (296 photos, 60 products) against a catalog of the
  train photos / the 81 packshots; ``*_held_out``: the val photos of ``export.data.HELD_OUT`` only;
  ``unseen_iconic``: every train+val photo of those products against the packshots. These three are
  unseen products only for a model trained with them held out (``python -m export embedder`` without
  ``--all-products``); for an all-products model they are seen products.
- ``topdown``: real top-down photos (8 products nobody trained on): catalog = the first 5 photos of each
  product by file name, queries = the other 296. Validation only. ``topdown_crops``: the same catalog,
  each query cut to its largest item by the shipped segmenter: what the runtime embeds.
- Catalogs are built as the default config builds them: with ``catalog.item_views`` each gallery photo
  counts whole and as its largest item (``--compare-views`` also scores the other way).
- open set (``open_*``), at the runtime's rule (``classify`` section of the default config) and swept over
  its threshold: ``grocery``: catalog = the packshots (or train photos) of 61 products (every 4th product by
  name left out), queries = all val photos; ``topdown``: the 5-photo catalog without 2 of the 8 products,
  every one of the 28 pairs in turn, figures averaged over them.

``--combined NAME=A+B@W`` scores one such combination under a name (e.g. the held-out model's).
``--sweep A B`` also scores A and B combined, cosine = (1 - w) cos_A + w cos_B (exactly what
``python -m export.combined --w`` exports), for w in --weights: how the combined embedder's w is picked.
``--split-general G`` does the same for the two parts of one ``export.embedder.GeneralNet`` ONNX (its
projection and its pooled trunk features, read back out of its embedding with the w in its metadata):
how the shipped one-trunk embedder's w is picked, on the held-out grocery products.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recognition_sets import Embedded, embed_all

from export.data import HELD_OUT
from stream.config import load_config
from stream.eval.openset import closed_set, open_set_figures, product_scores, rule_figures
from stream.stages.classify import UnknownRule

RESULTS = ROOT / "benchmarks" / "results"
CATALOG_PHOTOS = 5  # top-down catalog: the first 5 photos of each product by file name


def _index(products: tuple[str, ...] | list[str], names: list[str]) -> np.ndarray:
    pos = {p: i for i, p in enumerate(names)}
    return np.array([pos.get(p, -1) for p in products], dtype=np.int64)


def _rank_in_product(e: Embedded) -> np.ndarray:
    seen: dict[str, int] = {}
    rank = np.zeros(len(e.products), np.int64)
    for i, p in enumerate(e.products):
        rank[i] = seen.get(p, 0)
        seen[p] = rank[i] + 1
    return rank


def _scores(gallery: Embedded, queries: Embedded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(product scores [Q, P], truth [Q] (-1: absent), gallery owner [G]) for one protocol."""
    names = sorted(set(gallery.products))
    owner = _index(gallery.products, names)
    return product_scores(queries.vectors, gallery.vectors, owner, len(names)), _index(queries.products, names), owner


def _gallery(e: dict[str, Embedded], name: str, keep: np.ndarray | None, item_views: bool) -> Embedded:
    """Set ``name`` (rows ``keep``) as a catalog holds it: each photo whole, plus its item view when
    ``item_views`` (``catalog.item_views``)."""
    whole, items = e[name], e[f"{name}_items"]
    if keep is not None:
        whole, items = whole.select(keep), items.select(keep)
    return whole + items if item_views else whole


def protocols(e: dict[str, Embedded], item_views: bool) -> dict[str, tuple[Embedded, Embedded]]:
    """name -> (gallery, queries) for every closed-set protocol."""
    held = np.array([p in HELD_OUT for p in e["val"].products])
    unseen = e["train"].select(np.array([p in HELD_OUT for p in e["train"].products])) + e["val"].select(held)
    rank = _rank_in_product(e["topdown"])
    train, iconic = _gallery(e, "train", None, item_views), _gallery(e, "iconic", None, item_views)
    td_gallery = _gallery(e, "topdown", rank < CATALOG_PHOTOS, item_views)
    return {
        "val_train": (train, e["val"]),
        "val_iconic": (iconic, e["val"]),
        "val_train_held_out": (train, e["val"].select(held)),
        "val_iconic_held_out": (iconic, e["val"].select(held)),
        "unseen_iconic": (iconic, unseen),
        "topdown": (td_gallery, e["topdown"].select(rank >= CATALOG_PHOTOS)),
        "topdown_crops": (td_gallery, e["topdown_items"].select(rank >= CATALOG_PHOTOS)),
    }


def open_protocols(e: dict[str, Embedded], item_views: bool) -> dict[str, list[tuple[Embedded, Embedded]]]:
    """name -> [(gallery without some products, queries of all)], figures averaged over the list."""
    products = sorted(set(e["train"].products))
    absent = set(products[3::4])
    out: dict[str, list[tuple[Embedded, Embedded]]] = {}
    for cat in ("iconic", "train"):
        keep = np.array([p not in absent for p in e[cat].products])
        out[f"open_grocery_{cat}"] = [(_gallery(e, cat, keep, item_views), e["val"])]
    td, rank = e["topdown"], _rank_in_product(e["topdown"])
    names = sorted(set(td.products))
    pairs = list(itertools.combinations(names, 2))
    for key, queries in (("open_topdown", td), ("open_topdown_crops", e["topdown_items"])):
        out[key] = [
            (
                _gallery(
                    e, "topdown", (rank < CATALOG_PHOTOS) & np.array([p not in pr for p in td.products]), item_views
                ),
                queries.select(rank >= CATALOG_PHOTOS),
            )
            for pr in pairs
        ]
    return out


def _mean_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("unknown_rejected", "known_correct", "known_rejected")
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in keys}
    out["n_absent_queries"] = int(sum(r["n_absent_queries"] for r in rows))
    out["n_known_queries"] = int(sum(r["n_known_queries"] for r in rows))
    out["n_splits"] = len(rows)
    return out


def evaluate(e: dict[str, Embedded], rule: UnknownRule, item_views: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (g, q) in protocols(e, item_views).items():
        scores, truth, _ = _scores(g, q)
        out[name] = closed_set(scores, truth)
    raw: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for name, splits in open_protocols(e, item_views).items():
        per_split, raw[name] = [], []
        for g, q in splits:
            scores, truth, _ = _scores(g, q)
            pred, _, ranked = rule.decide(scores)
            per_split.append(rule_figures(rule, ranked, pred, truth))
            raw[name].append((ranked, pred, truth))
        row: dict[str, Any] = {**_mean_figures(per_split), **rule.describe()}
        for key in ("margin_sweep", "threshold_sweep"):
            param = key.split("_")[0]
            row[key] = [
                {param: rows[0][param], **_mean_figures(list(rows))}
                for rows in zip(*(f[key] for f in per_split), strict=True)
            ]
        out[name] = row
    out["picked_rule"] = pick_rule(rule, raw)
    return out


PICK_ON = ("open_grocery_iconic", "open_grocery_train")
PICK_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(0, 15))
PICK_MARGINS = tuple(round(0.02 * i, 2) for i in range(0, 21))


def _figures_at(rule: UnknownRule, splits: list, t: float, m: float) -> dict[str, Any]:
    return _mean_figures([open_set_figures(p, rule.rejected(r, threshold=t, margin=m), tr) for r, p, tr in splits])


def pick_rule(rule: UnknownRule, raw: dict[str, list]) -> dict[str, Any]:
    """The (threshold, margin) on a grid whose worse grocery open split (``PICK_ON``: packshot and
    train-photo catalogs) has the best (absent rejected + present named right) / 2: one setting for both
    kinds of catalog, chosen without the top-down set, which is then reported at it."""
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    for t in PICK_THRESHOLDS:
        for m in PICK_MARGINS:
            figs = [_figures_at(rule, raw[k], t, m) for k in PICK_ON]
            worse = min((f["unknown_rejected"] + f["known_correct"]) / 2 for f in figs)
            if worse > best[0]:
                best = (worse, t, m)
    out: dict[str, Any] = {"threshold": best[1], "margin": best[2], "worse_grocery_balanced": best[0]}
    for key, splits in raw.items():
        f = _figures_at(rule, splits, best[1], best[2])
        out[key] = {k: f[k] for k in ("unknown_rejected", "known_correct", "known_rejected")}
    return out


def combine(a: dict[str, Embedded], b: dict[str, Embedded], w: float) -> dict[str, Embedded]:
    """The embeddings of the combined model: [sqrt(1-w) a, sqrt(w) b] (unit norm already)."""
    out = {}
    for name, ea in a.items():
        eb = b[name]
        if ea.products != eb.products or ea.files != eb.files:
            raise SystemExit(f"bench_recognition: error: set {name} differs between the two models")
        v = np.concatenate([np.sqrt(1 - w) * ea.vectors, np.sqrt(w) * eb.vectors], axis=1)
        out[name] = Embedded(ea.products, ea.files, v.astype(np.float32))
    return out


def split_general(model: Path, e: dict[str, Embedded]) -> tuple[dict[str, Embedded], dict[str, Embedded]]:
    """(projection part, pooled part) of a GeneralNet's embeddings, each unit-norm again: the graph
    concatenates [sqrt(1 - w) a, sqrt(w) b] with the w its ``combination`` metadata records."""
    import onnx  # noqa: PLC0415

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    if "combination" not in meta:
        raise SystemExit(f"bench_recognition: error: {model} is not a GeneralNet (no 'combination' metadata)")
    w = float(json.loads(meta["combination"])["general_weight"])
    if not 0.0 < w < 1.0:
        raise SystemExit(f"bench_recognition: error: {model} has w={w}: export it with 0 < w < 1 to split it")
    dim = int(meta["embedding_dim"]) - 1280
    parts = []
    for cols, scale in ((slice(0, dim), np.sqrt(1 - w)), (slice(dim, None), np.sqrt(w))):
        parts.append(
            {k: Embedded(v.products, v.files, (v.vectors[:, cols] / scale).astype(np.float32)) for k, v in e.items()}
        )
    return parts[0], parts[1]


def _table(results: dict[str, dict[str, Any]]) -> str:
    cols = (
        "val_train",
        "val_iconic",
        "val_train_held_out",
        "val_iconic_held_out",
        "unseen_iconic",
        "topdown",
        "topdown_crops",
    )
    head = f"{'model':<28}" + "".join(f"{c[:18]:>19}" for c in cols)
    lines = [head]
    for name, r in results.items():
        lines.append(f"{name[:28]:<28}" + "".join(f"{r[c]['top1'] * 100:18.1f}%" for c in cols))
    lines.append("")
    lines.append(
        f"{'open set at the default rule':<40} {'absent rejected':>16} {'known correct':>14} {'known rejected':>15}"
    )
    for name, r in results.items():
        for key in ("open_grocery_iconic", "open_grocery_train", "open_topdown", "open_topdown_crops"):
            o = r[key]
            lines.append(
                f"{(name + ' ' + key[5:])[:40]:<40} {o['unknown_rejected'] * 100:15.1f}%"
                f" {o['known_correct'] * 100:13.1f}% {o['known_rejected'] * 100:14.1f}%"
            )
    lines.append("")
    lines.append("rule picked on the grocery open splits (best worse-split (rejected + named right) / 2):")
    for name, r in results.items():
        pk = r["picked_rule"]
        lines.append(
            f"{name[:28]:<28} threshold={pk['threshold']:.2f} margin={pk['margin']:.2f}  "
            + "  ".join(
                f"{k[5:]} {pk[k]['unknown_rejected'] * 100:.1f}%/{pk[k]['known_correct'] * 100:.1f}%"
                for k in (*PICK_ON, "open_topdown", "open_topdown_crops")
            )
        )
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    keys = ("open_grocery_iconic", "open_grocery_train", "open_topdown", "open_topdown_crops")
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), sharey=True)
    for ax, key in zip(axes, keys, strict=True):
        for name, r in results.items():
            sw = r[key]["margin_sweep"]
            line = ax.plot([s["unknown_rejected"] for s in sw], [s["known_correct"] for s in sw], label=name)[0]
            ax.plot([r[key]["unknown_rejected"]], [r[key]["known_correct"]], "o", color=line.get_color())
        ax.axvline(0.9, color="grey", lw=0.6, ls="--")
        ax.axhline(0.85, color="grey", lw=0.6, ls="--")
        ax.set_title(key[5:])
        ax.set_xlabel("absent products rejected")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("present products named right")
    axes[0].legend(fontsize=7)
    fig.suptitle("open set: the unknown rule's margin swept at its threshold (dot: the default config)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _named(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = name, Path(name).parent.name or Path(name).stem
    if not Path(path).is_file():
        raise SystemExit(f"bench_recognition: error: no model file {path} (give NAME=PATH.onnx)")
    return name, Path(path)


def _combination(spec: str) -> tuple[str, float, tuple[Path, Path]]:
    name, _, rest = spec.partition("=")
    pair, _, w = rest.rpartition("@")
    a, _, b = pair.partition("+")
    try:
        weight = float(w)
    except ValueError:
        weight = -1.0
    if not (name and a and b and 0.0 <= weight <= 1.0):
        raise SystemExit(f"bench_recognition: error: --combined wants NAME=FT.onnx+IMAGENET.onnx@W, got {spec!r}")
    return name, weight, (_named(f"a={a}")[1], _named(f"b={b}")[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="NAME=PATH.onnx (default: shipped=stream/models/embedder.onnx)")
    p.add_argument(
        "--sweep",
        nargs=2,
        metavar=("FINETUNED", "IMAGENET"),
        type=Path,
        help="also score the two combined for each --weights w",
    )
    p.add_argument(
        "--combined",
        nargs="*",
        default=[],
        metavar="NAME=FT.onnx+IMAGENET.onnx@W",
        help="also score a named combination at one w (e.g. a held-out fine-tuned model's)",
    )
    p.add_argument(
        "--split-general",
        type=Path,
        metavar="GENERAL",
        help="also score a GeneralNet ONNX's projection and pooled parts combined for each --weights w",
    )
    p.add_argument(
        "--compare-views",
        action="store_true",
        help="also score each model's catalogs the other way (whole photos only / with item views)",
    )
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "checkout-stream" / "bench_recognition")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "recognition.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the open-set sweeps (default: beside --out)")
    args = p.parse_args(argv)
    models = [_named(s) for s in (args.models or [f"shipped={ROOT / 'stream/models/embedder.onnx'}"])]
    cfg = load_config()
    rule, views = UnknownRule.from_config(cfg.classify), cfg.catalog.item_views
    results: dict[str, dict[str, Any]] = {}
    for name, path in models:
        e = embed_all(path, args.cache, args.threads)
        results[name] = {"model": _shown(path), "item_views": views, **evaluate(e, rule, views)}
        if args.compare_views:
            other = f"{name} {'whole photos only' if views else 'with item views'}"
            results[other] = {"model": _shown(path), "item_views": not views, **evaluate(e, rule, not views)}
    if args.sweep:
        a, b = (embed_all(m, args.cache, args.threads) for m in args.sweep)
        for w in args.weights:
            results[f"w={w:g}"] = {
                "model": f"combined {_shown(args.sweep[0])} + {_shown(args.sweep[1])}",
                "w": w,
                **evaluate(combine(a, b, w), rule, views),
            }
    if args.split_general:
        a, b = split_general(args.split_general, embed_all(args.split_general, args.cache, args.threads))
        for w in args.weights:
            results[f"w={w:g}"] = {
                "model": f"parts of {_shown(args.split_general)}",
                "w": w,
                **evaluate(a if w == 0 else b if w == 1 else combine(a, b, w), rule, views),
            }
    for spec in args.combined:
        name, w, parts = _combination(spec)
        ea, eb = (embed_all(m, args.cache, args.threads) for m in parts)
        results[name] = {
            "model": f"combined {_shown(parts[0])} + {_shown(parts[1])}",
            "w": w,
            **evaluate(combine(ea, eb, w), rule, views),
        }
    print(_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rule": rule.describe(), "results": results}, indent=1) + "\n")
    plot = args.plot or args.out.with_suffix(".png")
    _plot(results, plot)
    print(f"wrote {_shown(args.out)} and {_shown(plot)}")
    return 0


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
