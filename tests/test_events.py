"""EventFactory and the event schema: every type validates, malformed events are rejected, seq is
gap-free and event ids are stable for equal inputs and distinct otherwise."""

from __future__ import annotations

import copy
import datetime as dt
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.events import (
    EVENT_TYPES,
    SCHEMA_ID,
    EventFactory,
    encode,
    gap_marker,
    schema_path,
    utc_iso,
    validate,
)
from stream.types import Frame, Label

T0 = 1000.0  # monotonic capture time of the test frame
UTC0 = 1714566896.5  # 2024-05-01T12:34:56.500Z


def frame(index: int = 7, t: float = T0, utc: float = UTC0) -> Frame:
    return Frame(image=np.zeros((4, 6, 3), np.uint8), index=index, t_capture=t, utc_capture=utc, source="cam0")


def factory(run_id: str = "run-1", now: float = T0 + 0.0425) -> EventFactory:
    return EventFactory(run_id, "cam0", clock=lambda: now, wallclock=lambda: UTC0 + 0.25)


LABEL = Label(
    product="cola-033",
    score=0.91,
    margin=0.2,
    topk=(("cola-033", 0.91), ("fanta", 0.71)),
    unknown=False,
    n_embeddings=4,
)


def test_schema_file_is_valid_draft_2020_12() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path().read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(EVENT_TYPES) | {"stream.gap"} == set(schema["properties"]["type"]["enum"])


BASKET_FIELDS: dict[str, dict] = {
    "basket.opened": {"mode": "tray"},
    "basket.item_added": {"product": "cola-033", "unknown": False, "score": 0.9, "margin": 0.2, "zone": None},
    "basket.item_removed": {"product": "cola-033"},
    "basket.item_relabelled": {
        "product": "fanta",
        "previous": "cola-033",
        "unknown": False,
        "score": 0.8,
        "margin": 0.1,
    },
    "basket.needs_assist": {"reason": "low_margin", "detail": {"margin": 0.01}},
    "basket.closed": {
        "reason": "end_of_stream",
        "receipt": {
            "items": [{"product": "fanta", "quantity": 1, "track_ids": [3], "scores": [0.8]}],
            "unknown_items": 0,
            "unknown_track_ids": [],
        },
    },
}


def build_all(f: EventFactory) -> list[dict]:
    events = []
    for type_, kind in EVENT_TYPES.items():
        if kind == "item":
            events.append(f.item(type_, frame(), 3, [1, 2, 30.5, 40], None))
            events.append(f.item(type_, frame(), np.int64(4), np.array([1, 2, 3, 4], np.float32), LABEL))
        elif kind == "status":
            events.append(f.status(type_, {"error": "timeout", "attempt": 2}))
            events.append(f.status(type_, {}, frame_index=12))
        elif kind == "basket":
            events.append(
                f.basket(
                    type_,
                    "run-1/default/1",
                    BASKET_FIELDS[type_],
                    track_id=None if type_ in ("basket.opened", "basket.closed") else 3,
                )
            )
        else:
            events.append(
                f.summary(
                    {
                        "frames_read": 10,
                        "frames_processed": 9,
                        "frames_dropped": 1,
                        "stage_ms": {"segment": {"p50": 1.0, "p95": 2.0, "p99": 3.0}},
                        "frame_age_ms": {"p50": 5.0, "p95": 6.0, "p99": None},
                    }
                )
            )
    return events


def test_every_type_built_by_the_factory_validates_and_round_trips_json() -> None:
    events = build_all(factory())
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    for event in events:
        validate(event)
        assert json.loads(encode(event)) == event
    validate(gap_marker(3, 9))


def test_item_event_fields() -> None:
    entered = factory().item("item.entered", frame(), 3, [1, 2, 30.5, 40], None)
    assert entered["schema"] == SCHEMA_ID
    assert entered["capture_utc"] == "2024-05-01T12:34:56.500Z"
    assert entered["emitted_utc"] == "2024-05-01T12:34:56.750Z"
    assert entered["age_ms"] == pytest.approx(42.5)
    assert entered["frame_index"] == 7 and entered["track_id"] == 3
    unknown = (entered["label"], entered["score"], entered["topk"], entered["unknown"])
    assert unknown == ("unknown", 0.0, [], True)
    classified = factory().item("item.classified", frame(), 3, [1, 2, 3, 4], LABEL)
    assert classified["label"] == "cola-033" and classified["unknown"] is False
    assert classified["topk"] == [{"product": "cola-033", "score": 0.91}, {"product": "fanta", "score": 0.71}]
    assert classified["margin"] == pytest.approx(0.2)


def test_status_and_summary_have_no_track_or_capture_time() -> None:
    detail = {"error": "eof"}
    event = factory().status("source.offline", detail)
    assert (event["track_id"], event["capture_utc"], event["age_ms"]) == (None, None, None)
    event["detail"]["error"] = "changed"
    assert detail == {"error": "eof"}  # the caller's dict is copied, never shared


def mutate(event: dict, key: str, value: object) -> dict:
    bad = copy.deepcopy(event)
    if value is KeyError:
        del bad[key]
    else:
        bad[key] = value
    return bad


ITEM = factory().item("item.left", frame(), 3, [1, 2, 3, 4], LABEL)
STATUS = factory().status("source.online", {"after_s": 1.5})


@pytest.mark.parametrize(
    ("event", "why"),
    [
        ({}, "empty object"),
        (mutate(ITEM, "seq", KeyError), "no seq"),
        (mutate(ITEM, "seq", 0), "seq starts at 1"),
        (mutate(ITEM, "schema", "checkout-stream/event/0"), "other schema version"),
        (mutate(ITEM, "type", "item.moved"), "unknown type"),
        (mutate(ITEM, "extra", 1), "unknown field"),
        (mutate(ITEM, "bbox", [1, 2, 3]), "bbox of three numbers"),
        (mutate(ITEM, "label", KeyError), "item without label"),
        (mutate(ITEM, "track_id", None), "item without track"),
        (mutate(ITEM, "capture_utc", "2024-05-01 12:34:56"), "capture time not ISO with ms and Z"),
        (mutate(ITEM, "event_id", "not-a-uuid"), "event_id not a uuid5"),
        (mutate(ITEM, "topk", [{"product": "x"}]), "candidate without score"),
        (mutate(STATUS, "detail", "text"), "detail not an object"),
        (mutate(STATUS, "bbox", [1, 2, 3, 4]), "status with item fields"),
        (gap_marker(0, 3), "gap from seq 0"),
    ],
)
def test_malformed_events_are_rejected(event: dict, why: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        validate(event)


def test_seq_is_gap_free_from_one_across_types() -> None:
    f = factory()
    assert f.last_seq == 0
    events = build_all(f) + build_all(f)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert f.last_seq == len(events)


def test_counters_are_per_instance() -> None:
    a, b = factory(), factory()
    build_all(a)
    assert b.status("source.online", {})["seq"] == 1


def test_event_id_is_deterministic_for_equal_inputs() -> None:
    one = [e["event_id"] for e in build_all(factory(now=T0 + 1))]
    two = [e["event_id"] for e in build_all(factory(now=T0 + 5))]  # times do not enter the id
    assert one == two


def test_event_id_is_distinct_otherwise() -> None:
    f = factory()
    ids = [e["event_id"] for e in build_all(f) + build_all(f)]
    ids += [f.item("item.entered", frame(), t, [0, 0, 1, 1], None)["event_id"] for t in range(5, 50)]
    ids += [e["event_id"] for e in build_all(factory(run_id="run-2"))]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.item("item.moved", frame(), 1, [0, 0, 1, 1], None), "valid types: item.entered"),
        (lambda f: f.item("source.online", frame(), 1, [0, 0, 1, 1], None), "takes item.entered"),
        (lambda f: f.status("item.left", {}), "takes source.offline, source.online"),
        (lambda f: f.item("item.left", frame(), 1, [0, 0, 1], None), "expected 4 numbers"),
        (lambda f: f.item("item.left", frame(), 1, [0, 0, 1, float("nan")], None), "finite"),
    ],
)
def test_bad_calls_say_what_was_expected(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(factory())


def test_run_id_is_required() -> None:
    with pytest.raises(ValueError, match="run_id"):
        EventFactory("", "cam0")


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (UTC0 + 0.9996, "2024-05-01T12:34:57.500Z"),  # rounds to the nearest ms, carrying into seconds
        (1714566899.9999, "2024-05-01T12:35:00.000Z"),
    ],
)
def test_utc_iso_table(t: float, text: str) -> None:
    assert utc_iso(t) == text


@given(st.integers(0, 4_102_444_800_000))  # ms up to 2100-01-01
def test_utc_iso_matches_datetime(ms: int) -> None:
    ref = dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc).replace(microsecond=(ms % 1000) * 1000)
    assert utc_iso(ms / 1000) == ref.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_every_event_names_its_lane_and_other_lanes_get_other_ids() -> None:
    default = build_all(factory())
    assert {e["lane"] for e in default} == {"default"}
    lane2 = build_all(EventFactory("run-1", "cam0", clock=lambda: T0, wallclock=lambda: UTC0, lane="lane-2"))
    assert {e["lane"] for e in lane2} == {"lane-2"}
    for event in lane2:
        validate(event)
    assert not {e["event_id"] for e in default} & {e["event_id"] for e in lane2}


@pytest.mark.parametrize("lane", ["", "a/b", "a+", "#"])
def test_a_lane_name_that_cannot_be_a_topic_level_is_refused(lane: str) -> None:
    with pytest.raises(ValueError, match="lane must be"):
        EventFactory("run-1", "cam0", lane=lane)


def test_basket_builder_refuses_other_types() -> None:
    with pytest.raises(ValueError, match="this builder takes basket.opened"):
        factory().basket("item.left", "b", {})
