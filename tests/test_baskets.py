"""Baskets over the item lifecycle: table-driven cases for both modes, needs-assist reasons, idle and
end-of-stream closes, schema validity; a property test that replaying a basket's events always gives
exactly its receipt and that a replay of the same input reproduces every event_id."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.baskets import Baskets, replay
from stream.config import BasketConfig, load_config, replace
from stream.events import EventFactory, validate
from stream.types import Frame, Label

IMAGE = np.zeros((2, 2, 3), np.uint8)


def cfg(**changes: Any) -> BasketConfig:
    return replace(load_config().basket, **changes)


def label(product: str, score: float = 0.9, margin: float = 0.3) -> Label | None:
    if product == "unknown":
        return Label("unknown", 0.3, 0.05, (("a", 0.3), ("b", 0.25)), True, 3)
    return Label(product, score, margin, ((product, score), ("other", score - margin)), False, 3)


class Lane:
    """Item events built by a real EventFactory, fed to Baskets sharing it (as in the pipeline)."""

    def __init__(self, run_id: str = "run-b", **changes: Any) -> None:
        self.factory = EventFactory(run_id, "cam0", clock=lambda: 0.0, wallclock=lambda: 1.7e9)
        self.baskets = Baskets(cfg(**changes), self.factory)
        self.frame = 0
        self.out: list[dict] = []

    def step(self, t: float, *items: tuple[str, int, str | None]) -> list[dict]:
        """One frame at capture time ``t`` with item events (type suffix, track, product or None)."""
        self.frame += 1
        f = Frame(IMAGE, self.frame, t, 1.7e9 + t, "cam0")
        events = [
            self.factory.item(f"item.{k}", f, tid, [0, 0, 10, 10], None if p is None else label(p))
            for k, tid, p in items
        ]
        got = self.baskets.update(events, t)
        self.out += got
        return got

    def close(self, reason: str = "api") -> list[dict]:
        got = self.baskets.close(reason)
        self.out += got
        return got


def types(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("basket.") for e in events]


def receipt(events: list[dict]) -> dict:
    closed = [e for e in events if e["type"] == "basket.closed"]
    assert len(closed) == 1
    return closed[0]["receipt"]


def test_no_item_events_no_basket() -> None:
    lane = Lane()
    assert lane.step(0.0) == [] and lane.close() == [] and lane.close("end_of_stream") == []


@pytest.mark.parametrize(
    ("mode", "expected_types", "products"),
    [
        ("tray", ["opened", "item_added", "item_added", "item_removed", "closed"], ["fanta"]),
        ("belt", ["opened", "item_added", "item_added", "closed"], ["cola", "fanta"]),
    ],
)
def test_leaving_removes_in_tray_mode_and_passes_through_in_belt_mode(
    mode: str, expected_types: list[str], products: list[str]
) -> None:
    lane = Lane(mode=mode)
    lane.step(0.0, ("entered", 1, None), ("entered", 2, None))
    lane.step(0.1, ("classified", 1, "cola"), ("classified", 2, "fanta"))
    lane.step(0.2, ("left", 1, "cola"))
    lane.close("api")
    assert types(lane.out) == expected_types
    got = receipt(lane.out)
    assert [line["product"] for line in got["items"]] == products
    assert lane.out[-1]["reason"] == "api"
    assert got == replay(lane.out)


def test_relabel_carries_the_previous_product_and_the_receipt_the_new_one() -> None:
    lane = Lane()
    lane.step(0.0, ("entered", 4, None))
    lane.step(0.1, ("classified", 4, "cola"))
    got = lane.step(0.2, ("classified", 4, "fanta"))
    assert types(got) == ["item_relabelled"] and got[0]["previous"] == "cola" and got[0]["product"] == "fanta"
    lane.close()
    assert receipt(lane.out)["items"] == [{"product": "fanta", "quantity": 1, "track_ids": [4], "scores": [0.9]}]


def test_quantities_group_by_product_with_evidence() -> None:
    lane = Lane()
    lane.step(0.0, *[("entered", t, None) for t in (3, 1, 2)])
    lane.step(0.1, ("classified", 3, "cola"), ("classified", 1, "cola"), ("classified", 2, "water"))
    lane.close()
    assert receipt(lane.out)["items"] == [
        {"product": "cola", "quantity": 2, "track_ids": [1, 3], "scores": [0.9, 0.9]},
        {"product": "water", "quantity": 1, "track_ids": [2], "scores": [0.9]},
    ]


def test_an_item_never_recognised_is_an_unknown_item_and_asks_for_assist() -> None:
    lane = Lane()
    lane.step(0.0, ("entered", 7, None))
    got = lane.close("end_of_stream")
    assert types(got) == ["item_added", "needs_assist", "closed"]
    assert got[1]["reason"] == "unknown_product" and got[1]["track_id"] == 7
    assert receipt(got) == {"items": [], "unknown_items": 1, "unknown_track_ids": [7]}
    assert got[-1]["reason"] == "end_of_stream"


def test_tray_item_taken_back_before_recognition_is_never_on_the_receipt() -> None:
    lane = Lane(mode="tray")
    lane.step(0.0, ("entered", 1, None))
    assert lane.step(0.1, ("left", 1, None)) == []
    lane.close()
    assert receipt(lane.out) == {"items": [], "unknown_items": 0, "unknown_track_ids": []}


def test_belt_item_unrecognised_until_it_left_is_added_with_the_left_label() -> None:
    lane = Lane(mode="belt")
    lane.step(0.0, ("entered", 1, None))
    got = lane.step(0.1, ("left", 1, "cola"))
    assert types(got) == ["item_added"] and got[0]["product"] == "cola"


@pytest.mark.parametrize(
    ("changes", "steps", "reason"),
    [
        ({"assist_min_margin": 0.1}, [("classified", 1, "cola-close")], "low_margin"),
        ({"assist_max_items": 2}, [("entered", 2, None), ("entered", 3, None)], "too_many_items"),
        ({}, [("classified", 1, "unknown")], "unknown_product"),
    ],
)
def test_needs_assist_reasons(changes: dict, steps: list, reason: str) -> None:
    lane = Lane(**changes)
    lane.step(0.0, ("entered", 1, None))
    for k, tid, p in steps:
        lane.frame += 1
        f = Frame(IMAGE, lane.frame, 0.1, 1.7e9, "cam0")
        lab = (
            Label("cola", 0.8, 0.02, (("cola", 0.8), ("pepsi", 0.78)), False, 3)
            if p == "cola-close"
            else (None if p is None else label(p))
        )
        lane.out += lane.baskets.update([lane.factory.item(f"item.{k}", f, tid, [0, 0, 1, 1], lab)], 0.1)
    assists = [e for e in lane.out if e["type"] == "basket.needs_assist"]
    assert [e["reason"] for e in assists] == [reason]
    if reason == "low_margin":
        assert assists[0]["detail"]["products"] == ["cola", "pepsi"]


def test_crowding_asks_once_until_it_clears() -> None:
    lane = Lane(assist_max_items=1, assist_unknown=False)
    lane.step(0.0, ("entered", 1, None), ("entered", 2, None), ("entered", 3, None))
    lane.step(0.1, ("left", 3, None), ("left", 2, None))
    lane.step(0.2, ("entered", 4, None))
    assert [e["detail"]["items"] for e in lane.out if e["type"] == "basket.needs_assist"] == [2, 2]


def test_idle_closes_and_items_of_a_closed_basket_are_ignored() -> None:
    lane = Lane(idle_close_s=5.0)
    lane.step(0.0, ("entered", 1, None))
    lane.step(1.0, ("classified", 1, "cola"))
    assert lane.step(5.9) == []
    got = lane.step(6.0, ("classified", 1, "fanta"), ("entered", 2, None))  # 1 was charged already
    assert types(got) == ["closed", "opened"]
    assert got[0]["reason"] == "idle" and receipt(got)["items"][0]["track_ids"] == [1]
    assert got[1]["basket_id"].endswith("/2") and got[0]["basket_id"].endswith("/1")
    assert lane.step(6.1, ("left", 1, "cola")) == []


def test_every_basket_event_validates_against_the_schema() -> None:
    lane = Lane(mode="tray", assist_min_margin=0.5, assist_max_items=1)
    lane.step(0.0, ("entered", 1, None), ("entered", 2, None))
    lane.step(0.1, ("classified", 1, "cola"), ("classified", 2, "unknown"))
    lane.step(0.2, ("classified", 1, "fanta"), ("left", 2, "unknown"))
    lane.close()
    assert set(types(lane.out)) == {"opened", "item_added", "item_removed", "item_relabelled", "needs_assist", "closed"}
    for event in lane.out:
        validate(event)
        assert event["lane"] == "default" and event["basket_id"] == "run-b/default/1"


def test_close_requested_from_another_thread_happens_at_the_next_update() -> None:
    lane = Lane()
    lane.step(0.0, ("entered", 1, None), ("classified", 1, "cola"))
    worker = threading.Thread(target=lane.baskets.request_close)
    worker.start()
    worker.join()
    got = lane.step(0.1, ("entered", 2, None))
    assert types(got) == ["closed", "opened"] and got[0]["reason"] == "api"
    assert receipt(got)["items"][0]["track_ids"] == [1]


def test_bad_close_reason_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="idle, api, end_of_stream"):
        Lane().close("paid")


# -- property: replay == receipt, ids stable -------------------------------------------------------
PRODUCTS = ("cola", "fanta", "water", "unknown")
OPS = st.lists(
    st.tuples(
        st.sampled_from(("enter", "classify", "left", "tick", "close")),
        st.integers(0, 7),
        st.sampled_from(PRODUCTS),
        st.floats(0.0, 4.0),
    ),
    max_size=60,
)


def run_ops(ops: list, mode: str) -> list[dict]:
    lane = Lane(mode=mode, idle_close_s=3.0, assist_max_items=3, assist_min_margin=0.1)
    present: list[int] = []
    next_tid, t = 1, 0.0
    for op, pick, product, dt in ops:
        t += dt
        if op == "enter":
            present.append(next_tid)
            lane.step(t, ("entered", next_tid, None))
            next_tid += 1
        elif op in ("classify", "left") and present:
            tid = present[pick % len(present)]
            if op == "left":
                present.remove(tid)
            lane.step(t, ("classified" if op == "classify" else op, tid, product))
        elif op == "close":
            lane.close("api")
        else:
            lane.step(t)
    lane.close("end_of_stream")
    return lane.out


@settings(max_examples=100, deadline=None)
@given(OPS, st.sampled_from(("tray", "belt")))
def test_replaying_a_baskets_events_gives_exactly_its_receipt(ops: list, mode: str) -> None:
    out = run_ops(ops, mode)
    by_basket: dict[str, list[dict]] = {}
    for event in out:
        by_basket.setdefault(event["basket_id"], []).append(event)
    for events in by_basket.values():
        assert events[0]["type"] == "basket.opened"
        assert [e["type"] for e in events].count("basket.closed") == 1 and events[-1]["type"] == "basket.closed"
        assert replay(events) == events[-1]["receipt"]
    again = run_ops(ops, mode)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in out]
    assert len({e["event_id"] for e in out}) == len(out)


# -- a real clip through the real runtime -----------------------------------------------------------
CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips" / "car-detection.mp4"
ICONIC = CLIP.parents[1] / "grocery-store" / "iconic"


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not CLIP.exists() or not ICONIC.exists(), reason="../shared/data (clips, grocery-store) absent")
def test_real_clip_item_left_labels_and_basket_receipts() -> None:
    import cv2  # noqa: PLC0415

    from stream.app import build_runtime, load_recognition  # noqa: PLC0415
    from stream.sinks import MemorySink  # noqa: PLC0415
    from stream.sources.file import open_source  # noqa: PLC0415

    config = load_config(overrides={"runtime.stats_interval_s": 0.0})
    photos = {p.stem: [cv2.imread(str(p))] for p in sorted(ICONIC.glob("*.jpg"))[:20]}
    embedder, catalog = load_recognition(config, photos=photos)
    sink = MemorySink()
    rt = build_runtime(
        config,
        lambda on_status, stop: open_source(str(CLIP), config.source, on_status, stop),
        sink,
        embedder=embedder,
        catalog=catalog,
    )
    rt.run()
    events = sink.events
    last = {e["track_id"]: e["label"] for e in events if e["type"] == "item.classified"}
    left = {e["track_id"]: e["label"] for e in events if e["type"] == "item.left"}
    # Not a checkout scene: segmenter v3 keeps 2 items of it (v2 kept more); each must still close right.
    assert len(last) >= 2, "the clip should give several recognised items"
    assert {t: left[t] for t in last} == last  # every item.left says its last item.classified
    baskets: dict[str, list[dict]] = {}
    for e in events:
        if e["type"].startswith("basket."):
            baskets.setdefault(e["basket_id"], []).append(e)
    assert baskets and events[-2]["type"] == "basket.closed" and events[-2]["reason"] == "end_of_stream"
    for evs in baskets.values():
        assert evs[-1]["type"] == "basket.closed" and replay(evs) == evs[-1]["receipt"]
    for e in events:
        validate(e)
