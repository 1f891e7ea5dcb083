"""Item-level accuracy of the whole pipeline on rendered checkout scenes, whose ground truth is known.

Every track that emitted ``item.entered`` is matched to the scene item its box overlaps most (IoU >=
``MATCH_IOU`` at its first ``item.classified`` frame, else at its entry frame). Per scene: items
(visible for at least ``MIN_VISIBLE_S``), tracks reported, items found (recall), duplicate tracks (a
second track for an item already reported), spurious tracks (no item), and the labels of
``item.classified`` among first tracks of found items. The one scorer behind
``benchmarks/bench_scenes.py`` and the metric regression test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.app import build_runtime
from stream.config import load_config
from stream.sinks import MemorySink
from stream.sources.demo import SceneSource
from stream.stages.geometry import box_iou
from stream.stages.protocols import CatalogLike, EmbedderLike
from stream.synthetic.scene import CheckoutScene

MIN_VISIBLE_S = 1.5
MATCH_IOU = 0.5
COUNTS = ("items", "reported", "found", "duplicates", "spurious", "labelled", "correct_labels")


def match_item(scene: CheckoutScene, frame_index: int, bbox: Sequence[float]) -> tuple[int, str] | None:
    """(item key, product) of the scene item that best overlaps ``bbox`` in that frame, if any."""
    items = scene.render(frame_index).items
    if not items:
        return None
    ious = box_iou(np.asarray([bbox], np.float32), np.asarray([b for _, _, b in items], np.float32))[0]
    best = int(np.argmax(ious))
    return (items[best][0], items[best][1]) if ious[best] >= MATCH_IOU else None


def score_events(scene: CheckoutScene, events: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The counts in ``COUNTS`` for one scene's events."""
    visible: dict[int, int] = {}
    for i in range(scene.scene_length_frames):
        for key, _, _ in scene.render(i).items:
            visible[key] = visible.get(key, 0) + 1
    real = {k for k, n in visible.items() if n >= MIN_VISIBLE_S * scene.fps}
    tracks: dict[int, dict[str, dict]] = {}
    for ev in events:
        if ev["type"] in ("item.entered", "item.classified"):
            tracks.setdefault(ev["track_id"], {}).setdefault(ev["type"], ev)
    found: dict[int, int] = {}
    spurious = duplicates = correct = labelled = 0
    for evs in tracks.values():
        probe = evs.get("item.classified") or evs["item.entered"]
        hit = match_item(scene, probe["frame_index"], probe["bbox"])
        if hit is None:
            spurious += 1
            continue
        key, product = hit
        found[key] = found.get(key, 0) + 1
        duplicates += found[key] > 1
        if "item.classified" in evs and found[key] == 1:
            labelled += 1
            correct += evs["item.classified"]["label"] == product
    return {
        "items": len(real),
        "reported": len(tracks),
        "found": len(real & set(found)),
        "duplicates": duplicates,
        "spurious": spurious,
        "labelled": labelled,
        "correct_labels": correct,
    }


def run_scene(
    seed: int,
    seconds: float,
    embedder: EmbedderLike | None,
    catalog: CatalogLike | None,
    overrides: dict[str, Any] | None = None,
) -> tuple[CheckoutScene, list[dict[str, Any]], dict]:
    """Run the real pipeline (shipped models) over one rendered scene, offline: (scene, events, summary)."""
    cfg = load_config(overrides={"runtime.stats_interval_s": 0, **(overrides or {})})
    scene = CheckoutScene(seed=seed, duration_s=seconds)
    sink = MemorySink()
    rt = build_runtime(
        cfg,
        lambda _on_status, stop: SceneSource(scene, realtime=False, stop=stop),
        sink,
        embedder=embedder,
        catalog=catalog,
    )
    summary = rt.run()
    return scene, sink.events, summary


def score_seeds(
    seeds: Sequence[int],
    seconds: float,
    embedder: EmbedderLike | None,
    catalog: CatalogLike | None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-seed rows, their totals, recall and label accuracy."""
    rows = []
    for seed in seeds:
        scene, events, _ = run_scene(seed, seconds, embedder, catalog, overrides)
        rows.append({"seed": seed, **score_events(scene, events)})
    total = {k: sum(r[k] for r in rows) for k in COUNTS}
    return {
        "rows": rows,
        "total": total,
        "recall": total["found"] / max(total["items"], 1),
        "label_accuracy": total["correct_labels"] / max(total["labelled"], 1),
    }
