"""Pipeline lifecycle (entered / classified / left) and classifier budgeting, with fakes for the
models and the real tracker, classifier and event factory."""

from __future__ import annotations

import numpy as np
import pytest

from stream.config import load_config
from stream.events import EventFactory, validate
from stream.pipeline import Pipeline
from stream.stages.classify import Classifier, crop_item
from stream.stages.track import Tracker
from stream.types import Detections, Frame, Tracks
from tests.fakes import BruteCatalog, MeanColourEmbedder, ScriptedDetector, detections

RED, BLUE = (0, 0, 230), (230, 0, 0)
CATALOG = {"red-thing": np.array([0, 0, 230, 40.0]), "blue-thing": np.array([230, 0, 0, 40.0])}


def painted(index: int, items: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]) -> Frame:
    img = np.full((120, 160, 3), 90, np.uint8)
    for (x1, y1, x2, y2), colour in items:
        img[y1:y2, x1:x2] = colour
    return Frame(img, index, index / 30, 1.7e9 + index / 30, "fake")


def build(script, cfg=None, catalog=True):
    cfg = cfg or load_config()
    det = ScriptedDetector(script)
    emb = MeanColourEmbedder()
    classifier = Classifier(cfg.classify, emb if catalog else None, BruteCatalog(CATALOG) if catalog else None)
    return Pipeline(det, det, Tracker(cfg.track), classifier, EventFactory("run", "fake")), emb


def run(pipe, frames):
    events = []
    for f in frames:
        events += pipe.process(f).events
    return events + pipe.finish()


def test_nothing_on_the_counter_emits_nothing():
    pipe, emb = build({})
    assert run(pipe, [painted(i, []) for i in range(10)]) == []
    assert emb.calls == 0


def two_items_scene(n=40, leave_at=30):
    script, frames = {}, []
    for i in range(n):
        items = []
        if i < leave_at:
            items.append(((10 + i, 20, 50 + i, 60), RED))
        items.append(((100, 60, 140, 100), BLUE))
        script[i] = [b for b, _ in items]
        frames.append(painted(i, items))
    return script, frames


def test_each_item_enters_is_classified_and_leaves_once():
    script, frames = two_items_scene()
    pipe, _ = build(script)
    events = run(pipe, frames)
    for ev in events:
        validate(ev)
    by_track: dict[int, list[str]] = {}
    for ev in events:
        by_track.setdefault(ev["track_id"], []).append(ev["type"])
    assert len(by_track) == 2
    for types in by_track.values():
        assert types == ["item.entered", "item.classified", "item.left"]
    labels = {ev["label"] for ev in events if ev["type"] == "item.classified"}
    assert labels == {"red-thing", "blue-thing"}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # the red item left while the blue one was still there
    left = [e for e in events if e["type"] == "item.left"]
    assert left[0]["label"] == "red-thing" and left[0]["frame_index"] < 40


def test_without_catalog_items_are_tracked_but_unlabelled():
    script, frames = two_items_scene()
    pipe, _ = build(script, catalog=False)
    types = [e["type"] for e in run(pipe, frames)]
    assert types.count("item.entered") == 2 and types.count("item.left") == 2
    assert "item.classified" not in types


def test_crop_budget_limits_embeddings_per_second():
    # 30 crops/s in bursts of 1 over frames 1/30 s apart: one crop a frame at most
    cfg = load_config(overrides={"classify.crops_per_s": 30.0, "classify.batch": 1, "classify.refresh_frames": 1000})
    boxes = [(5 + 25 * k, 5, 25 + 25 * k, 25) for k in range(5)]
    script = {i: boxes for i in range(20)}
    det = ScriptedDetector(script)
    emb = MeanColourEmbedder()
    seen = []

    class CountingEmbedder:
        def embed(self, crops):
            seen.append(len(crops))
            return emb.embed(crops)

    clf = Classifier(cfg.classify, CountingEmbedder(), BruteCatalog(CATALOG))
    pipe = Pipeline(det, det, Tracker(cfg.track), clf, EventFactory("r", "s"))
    for i in range(20):
        pipe.process(painted(i, []))
    assert seen and max(seen) == 1
    # every track gets its min_embeddings before anyone is refreshed: 5 tracks x 2 = 10 crops
    assert sum(seen) == 5 * cfg.classify.min_embeddings


def test_label_does_not_flicker_on_one_odd_crop():
    cfg = load_config(overrides={"classify.refresh_frames": 1, "classify.min_embeddings": 2})
    box = (20, 20, 60, 60)
    colours = [RED] * 12 + [BLUE] + [RED] * 6  # one crop of the wrong colour (a hand, a glare)
    script = {i: [box] for i in range(len(colours))}
    pipe, _ = build(script, cfg)
    events = run(pipe, [painted(i, [(box, c)]) for i, c in enumerate(colours)])
    classified = [e["label"] for e in events if e["type"] == "item.classified"]
    assert classified == ["red-thing"]


def test_resolution_change_ends_items_and_resets():
    box = (20, 20, 60, 60)
    script = {i: [box] for i in range(20)}
    pipe, _ = build(script)
    frames = [painted(i, [(box, RED)]) for i in range(10)]
    big = [Frame(np.full((240, 320, 3), 90, np.uint8), i, i / 30, 1.7e9, "fake") for i in range(10, 20)]
    types = [e["type"] for e in run(pipe, frames + big)]
    assert types.count("item.entered") == 2 and types.count("item.left") == 2


@pytest.mark.parametrize(("padding", "mask"), [(0.0, False), (0.5, False), (0.1, True)])
def test_crop_item_pads_clips_and_masks(padding, mask):
    f = painted(0, [((10, 10, 30, 30), RED)])
    d = detections([(10, 10, 30, 30)], map_shape=(12, 16))
    d.instance_map[1:3, 1:3] = 1
    before = d.instance_map.copy()
    crop = crop_item(f, d, 0, padding, mask)
    side = int(20 * (1 + 2 * padding))
    assert crop.shape[:2] == (side, side)
    assert np.array_equal(d.instance_map, before)
    if mask:
        assert (crop == 127).any() and (crop == RED).all(axis=2).any()


# ---------------------------------------------------------------- row selection on the data types


def _three() -> Detections:
    inst = np.array([[0, 1, 1], [2, 2, 3]], np.int32)
    return Detections(
        xyxy=np.arange(12, dtype=np.float32).reshape(3, 4),
        area=np.array([1, 2, 3], np.float32),
        centroid=np.zeros((3, 2), np.float32),
        confidence=np.array([0.9, 0.8, 0.7], np.float32),
        class_id=np.ones(3, np.int32),
        instance_map=inst,
    )


@pytest.mark.parametrize(
    ("rows", "areas", "inst"),
    [
        ([], [], [[0, 0, 0], [0, 0, 0]]),
        (np.array([True, False, True]), [1, 3], [[0, 1, 1], [0, 0, 2]]),
        ([2, 0], [3, 1], [[0, 2, 2], [0, 0, 1]]),
        (np.array([1]), [2], [[0, 0, 0], [1, 1, 0]]),
    ],
)
def test_detections_select_keeps_rows_and_renumbers_the_map(rows, areas, inst) -> None:
    d = _three()
    out = d[rows]
    assert out.area.tolist() == areas and out.instance_map.tolist() == inst
    assert (
        out.xyxy
        == d.xyxy[np.asarray(rows, dtype=bool if isinstance(rows, np.ndarray) and rows.dtype == bool else np.int64)]
    ).all()
    assert d.instance_map.tolist() == [[0, 1, 1], [2, 2, 3]], "input mutated"


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        (np.array([True, False]), ValueError),
        ([3], IndexError),
        (np.array([0.5]), TypeError),
    ],
)
def test_detections_select_rejects_bad_rows(rows, error) -> None:
    with pytest.raises(error):
        _three().select(rows)


def test_tracks_select() -> None:
    t = Tracks(
        track_id=np.array([5, 6, 7], np.int64),
        xyxy=np.zeros((3, 4), np.float32),
        state=np.array([0, 1, 2], np.int8),
        detection_index=np.array([-1, 0, 1], np.int64),
        score=np.zeros(3, np.float32),
        age=np.zeros(3, np.int32),
    )
    assert t.select(t.state == 1).track_id.tolist() == [6]
    assert t[[2, 0]].track_id.tolist() == [7, 5] and len(t[[]]) == 0


def test_item_left_carries_the_last_label_after_the_classifier_forgot_the_track():
    # The red item is removed (max_lost_frames after it left) long before the end of the stream: the
    # classifier drops a removed track in the same update, so item.left must not ask it.
    script, frames = two_items_scene(n=70, leave_at=30)
    pipe, _ = build(script)
    events = run(pipe, frames)
    left = {e["track_id"]: e for e in events if e["type"] == "item.left"}
    last = {e["track_id"]: e["label"] for e in events if e["type"] == "item.classified"}
    assert set(left) == set(last) and len(left) == 2
    first_left = min(left.values(), key=lambda e: e["seq"])
    assert first_left["frame_index"] < 69  # removed mid-stream, not at finish()
    for tid, event in left.items():
        assert (event["label"], event["unknown"]) == (last[tid], False)


def test_baskets_follow_the_item_events_and_finish_closes_the_basket():
    from stream.baskets import Baskets, replay  # noqa: PLC0415

    script, frames = two_items_scene(n=70, leave_at=30)
    cfg = load_config(overrides={"basket.mode": "belt"})
    det = ScriptedDetector(script)
    events_factory = EventFactory("run", "fake")
    classifier = Classifier(cfg.classify, MeanColourEmbedder(), BruteCatalog(CATALOG))
    pipe = Pipeline(
        det, det, Tracker(cfg.track), classifier, events_factory, baskets=Baskets(cfg.basket, events_factory)
    )
    events = run(pipe, frames)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for ev in events:
        validate(ev)
    closed = [e for e in events if e["type"] == "basket.closed"]
    assert len(closed) == 1 and closed[0]["reason"] == "end_of_stream" and events[-1] is closed[0]
    assert [line["product"] for line in closed[0]["receipt"]["items"]] == ["blue-thing", "red-thing"]
    assert replay(events) == closed[0]["receipt"]


def test_a_pre_scaled_analysis_image_gives_boxes_in_full_frame_pixels():
    class ShapeCheck:
        def __init__(self):
            self.seen = []

        def segment(self, image):
            from stream.types import SegMap  # noqa: PLC0415

            self.seen.append(image.shape)
            classes = np.zeros(image.shape[:2], np.uint8)
            classes[6:12, 8:16] = 1
            return SegMap(classes, np.ones(image.shape[:2], np.float32), ("background", "item"), (1, 1))

    cfg = load_config()
    from stream.stages.boxes import BoxExtractor  # noqa: PLC0415

    seg = ShapeCheck()
    pipe = Pipeline(seg, BoxExtractor(cfg.boxes), Tracker(cfg.track), Classifier(cfg.classify, None, None), None)
    full = np.zeros((240, 320, 3), np.uint8)
    small = np.zeros((24, 32, 3), np.uint8)
    d = pipe.detect(Frame(full, 0, 0.0, 0.0, "s", analysis=small))
    assert seg.seen == [(24, 32, 3)]  # the segmenter read the small image only
    assert d.detections.xyxy.tolist() == [[80.0, 60.0, 160.0, 120.0]]  # boxes at the full frame's scale
