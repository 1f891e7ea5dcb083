"""Tests for the track stage (stream.stages.track, stream.stages.kalman)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import TrackConfig, load_config
from stream.config import replace as config_replace
from stream.stages import kalman
from stream.stages.geometry import box_iou, gated_match, linear_assignment
from stream.stages.track import Tracker
from stream.types import CONFIRMED, LOST, REMOVED, TENTATIVE, Detections, Tracks

BASE = config_replace(load_config().track, min_hits=3)  # the tests count frames from 3


def cfg(**over: Any) -> TrackConfig:
    return BASE.model_copy(update=over)


def dets(boxes: list | np.ndarray, conf: list | float | np.ndarray | None = None) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(b)
    c = np.full(n, 0.9, np.float32) if conf is None else np.broadcast_to(np.asarray(conf, np.float32), (n,)).copy()
    return Detections(
        xyxy=b,
        area=((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float32),
        centroid=((b[:, :2] + b[:, 2:]) / 2).astype(np.float32),
        confidence=c,
        class_id=np.ones(n, np.int32),
        instance_map=np.zeros((1, 1), np.int32),
    )


def box(x: float, y: float, w: float = 40, h: float = 40) -> list[float]:
    return [x, y, x + w, y + h]


def row(t: Tracks, track_id: int) -> int:
    (hits,) = np.nonzero(t.track_id == track_id)
    assert len(hits) == 1, f"track {track_id} appears {len(hits)} times in {t.track_id}"
    return int(hits[0])


def confirm(tracker: Tracker, b: list[float], frames: int = 3) -> Tracks:
    out = Tracks.empty()
    for _ in range(frames):
        out = tracker.update(dets([b]))
    return out


# ---------------------------------------------------------------- lifecycle


def test_empty_detections_give_no_tracks() -> None:
    t = Tracker(cfg())
    for _ in range(3):
        out = t.update(Detections.empty())
        assert len(out) == 0
        assert out.track_id.dtype == np.int64 and out.xyxy.shape == (0, 4)


@pytest.mark.parametrize("min_hits", [1, 2, 3, 5])
def test_moving_box_keeps_one_id_and_is_confirmed_at_min_hits(min_hits: int) -> None:
    t = Tracker(cfg(min_hits=min_hits))
    for frame in range(1, 21):
        out = t.update(dets([box(10 + 6 * frame, 20 + 2 * frame)]))
        assert out.track_id.tolist() == [1]
        assert out.detection_index.tolist() == [0]
        assert out.age.tolist() == [frame - 1]
        want = CONFIRMED if frame >= min_hits else TENTATIVE
        assert out.state[0] == want, f"frame {frame}"


def test_tentative_track_missed_once_is_removed() -> None:
    t = Tracker(cfg(min_hits=3))
    t.update(dets([box(0, 0)]))
    t.update(dets([box(2, 0)]))
    out = t.update(Detections.empty())
    assert out.track_id.tolist() == [1] and out.state.tolist() == [REMOVED]
    assert len(t.update(Detections.empty())) == 0


@pytest.mark.parametrize("max_lost", [0, 1, 5])
def test_disappearing_box_goes_lost_then_removed_once(max_lost: int) -> None:
    t = Tracker(cfg(max_lost_frames=max_lost))
    confirm(t, box(50, 50))
    states = [t.update(Detections.empty()).state.tolist() for _ in range(max_lost + 3)]
    assert states[:max_lost] == [[LOST]] * max_lost
    assert states[max_lost] == [REMOVED]
    assert states[max_lost + 1 :] == [[], []]


@pytest.mark.parametrize(
    ("gap", "max_lost", "same_id"),
    [
        (1, 5, True),
        (5, 5, True),  # lost for exactly max_lost frames: still recoverable
        (6, 5, False),  # removed on the 6th miss: the item comes back as a new track
    ],
)
def test_reappearance_within_max_lost_keeps_id(gap: int, max_lost: int, same_id: bool) -> None:
    t = Tracker(cfg(max_lost_frames=max_lost))
    confirm(t, box(100, 100))
    for _ in range(gap):
        t.update(Detections.empty())
    out = t.update(dets([box(100, 100)]))
    live = out.state != REMOVED
    if same_id:
        assert out.track_id[live].tolist() == [1]
        assert out.state[live].tolist() == [CONFIRMED]
    else:
        assert out.track_id[live].tolist() == [2]
        assert out.state[live].tolist() == [TENTATIVE]
    assert out.detection_index[live].tolist() == [0]


@pytest.mark.parametrize(("speed", "dy"), [(4, 10), (8, 10), (8, 20)])
def test_two_crossing_boxes_keep_their_ids(speed: int, dy: int) -> None:
    t = Tracker(cfg())
    ids: dict[str, int] = {}
    for frame in range(60):
        a = box(0 + speed * frame, 100)
        b = box(400 - speed * frame, 100 + dy)
        order = ["a", "b"] if frame % 2 else ["b", "a"]  # detection order must not matter
        out = t.update(dets([a if k == "a" else b for k in order]))
        for tid, di in zip(out.track_id.tolist(), out.detection_index.tolist(), strict=True):
            assert di >= 0, f"frame {frame}: track {tid} unmatched"
            assert ids.setdefault(order[di], tid) == tid, f"frame {frame}: ids swapped"
    assert sorted(ids.values()) == [1, 2]


# ---------------------------------------------------------------- two-stage matching


@pytest.mark.parametrize(
    ("existing", "conf", "want_state", "want_index"),
    [
        ("none", 0.4, None, None),  # a weak detection never starts a track
        ("none", 0.1, None, None),  # below low_threshold: ignored
        ("confirmed", 0.4, CONFIRMED, 0),  # a weak detection keeps a tracked item alive
        ("confirmed", 0.1, LOST, -1),  # below low_threshold: the track is missed
        ("lost", 0.4, LOST, -1),  # lost tracks only come back on confident detections
        ("lost", 0.9, CONFIRMED, 0),
    ],
)
def test_low_confidence_detection(existing: str, conf: float, want_state: int | None, want_index: int | None) -> None:
    t = Tracker(cfg(high_threshold=0.6, low_threshold=0.3, new_track_threshold=0.6))
    if existing != "none":
        confirm(t, box(10, 10))
    if existing == "lost":
        t.update(Detections.empty())
    out = t.update(dets([box(10, 10)], conf))
    if want_state is None:
        assert len(out) == 0
        return
    assert out.track_id.tolist() == [1]
    assert out.state.tolist() == [want_state]
    assert out.detection_index.tolist() == [want_index]
    if want_index == 0:
        assert out.score[0] == pytest.approx(conf)


def test_new_track_threshold_above_high_threshold() -> None:
    t = Tracker(cfg(high_threshold=0.5, new_track_threshold=0.8, min_hits=1))
    assert len(t.update(dets([box(0, 0)], 0.6))) == 0  # confident enough to match, not to start
    t.update(dets([box(0, 0)], 0.9))
    out = t.update(dets([box(0, 0)], 0.6))
    assert out.track_id.tolist() == [1] and out.detection_index.tolist() == [0]


def test_far_detection_does_not_match() -> None:
    t = Tracker(cfg(min_hits=1))
    t.update(dets([box(0, 0)]))
    out = t.update(dets([box(300, 300)]))
    assert sorted(zip(out.track_id.tolist(), out.state.tolist(), out.detection_index.tolist(), strict=True)) == [
        (1, LOST, -1),
        (2, CONFIRMED, 0),
    ]


def test_low_threshold_above_high_is_rejected() -> None:
    with pytest.raises(ValueError, match="low_threshold"):
        Tracker(cfg(low_threshold=0.8, high_threshold=0.5))


# ---------------------------------------------------------------- instances, reset, contract


def test_two_trackers_have_independent_ids() -> None:
    a, b = Tracker(cfg(min_hits=1)), Tracker(cfg(min_hits=1))
    assert a.update(dets([box(0, 0), box(100, 0)])).track_id.tolist() == [1, 2]
    assert b.update(dets([box(0, 0)])).track_id.tolist() == [1]
    assert a.update(dets([box(0, 0), box(100, 0), box(200, 0)])).track_id.tolist() == [1, 2, 3]


def test_reset_clears_tracks_and_never_reuses_ids() -> None:
    t = Tracker(cfg(min_hits=1))
    t.update(dets([box(0, 0), box(100, 0)]))
    t.reset()
    assert len(t.update(Detections.empty())) == 0
    assert t.update(dets([box(0, 0)])).track_id.tolist() == [3]


def test_detection_index_points_at_the_matched_box() -> None:
    rng = np.random.default_rng(1)
    t = Tracker(cfg(min_hits=1))
    starts = np.array([[x, y] for x in (0, 200, 400) for y in (0, 200)], np.float32)
    for frame in range(10):
        xy = starts + frame * 3
        perm = rng.permutation(len(xy))
        boxes = np.concatenate([xy, xy + 50], axis=1)[perm]
        out = t.update(dets(boxes))
        assert len(out) == len(boxes)
        iou = box_iou(out.xyxy, boxes)
        assert out.detection_index.tolist() == iou.argmax(axis=1).tolist()
        assert (iou.max(axis=1) > 0.9).all()


def test_inputs_are_not_mutated() -> None:
    t = Tracker(cfg(min_hits=1))
    for frame in range(8):
        d = dets([box(5 * frame, 0), box(300, 5 * frame)], [0.9, 0.4])
        before = {f.name: getattr(d, f.name).copy() for f in dataclasses.fields(d)}
        for f in dataclasses.fields(d):
            getattr(d, f.name).flags.writeable = False
        t.update(d)
        for name, arr in before.items():
            np.testing.assert_array_equal(getattr(d, name), arr)


def test_returned_arrays_are_not_the_trackers_state() -> None:
    t = Tracker(cfg(min_hits=1))
    out = t.update(dets([box(0, 0)]))
    out.xyxy[:] = 999
    out.state[:] = REMOVED
    again = t.update(dets([box(0, 0)]))
    assert again.state.tolist() == [CONFIRMED] and again.xyxy[0, 0] < 10


def test_deterministic() -> None:
    rng = np.random.default_rng(7)
    frames = [
        dets(rng.uniform(0, 300, (6, 2)).repeat(2, axis=1)[:, [0, 2, 1, 3]] + [0, 0, 40, 40], rng.uniform(0, 1, 6))
        for _ in range(30)
    ]
    a, b = Tracker(cfg()), Tracker(cfg())
    for d in frames:
        x, y = a.update(d), b.update(d)
        for f in dataclasses.fields(x):
            np.testing.assert_array_equal(getattr(x, f.name), getattr(y, f.name))


# ---------------------------------------------------------------- properties


frame_strategy = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 4), st.floats(0.0, 1.0)),
    max_size=6,
)


@settings(max_examples=80, deadline=None)
@given(frames=st.lists(frame_strategy, max_size=25), min_hits=st.integers(1, 3), max_lost=st.integers(0, 3))
def test_property_ids_and_indices(frames: list, min_hits: int, max_lost: int) -> None:
    """Coarse grid boxes (lots of overlap and ambiguity) against the tracker's invariants."""
    t = Tracker(cfg(min_hits=min_hits, max_lost_frames=max_lost))
    removed: set[int] = set()
    alive: set[int] = set()
    highest = 0
    for frame in frames:
        boxes = [[20 * x, 20 * y, 20 * x + 15 * s, 20 * y + 15 * s] for x, y, s, _ in frame]
        d = dets(np.array(boxes, np.float32).reshape(-1, 4), [c for *_, c in frame])
        out = t.update(d)
        ids = out.track_id.tolist()
        assert len(set(ids)) == len(ids), "an id twice in one frame"
        assert not set(ids) & removed, "a removed id came back"
        assert alive <= set(ids), "a live track vanished without a REMOVED row"
        new = set(ids) - alive
        assert all(i > highest for i in new), "a new track reused an id"
        highest = max([highest, *ids])
        di = out.detection_index
        assert ((di >= -1) & (di < len(d))).all()
        matched = di[di >= 0]
        assert len(np.unique(matched)) == len(matched), "a detection matched twice"
        assert (out.state[out.age == 0] != LOST).all()
        gone = out.state == REMOVED
        removed |= set(out.track_id[gone].tolist())
        alive = set(out.track_id[~gone].tolist())


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 4), m=st.integers(0, 4), seed=st.integers(0, 2**32 - 1), gate=st.floats(0.0, 1.0))
def test_gated_match_against_brute_force(n: int, m: int, seed: int, gate: float) -> None:
    """Most feasible pairs first, then the least cost: checked against every partial matching."""
    rng = np.random.default_rng(seed)
    iou = rng.random((n, m))
    cost = 1.0 - iou
    rows, cols = gated_match(iou, cost, gate)
    assert (iou[rows, cols] >= gate).all()
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    best = (0, 0.0)
    for perm in itertools.permutations([*range(m), *([-1] * n)], n):
        pairs = [(r, c) for r, c in enumerate(perm) if c >= 0 and iou[r, c] >= gate]
        if len({c for _, c in pairs}) != len(pairs):
            continue
        key = (len(pairs), -sum(cost[r, c] for r, c in pairs))
        best = max(best, key)
    assert len(rows) == best[0]
    assert cost[rows, cols].sum() == pytest.approx(-best[1], abs=1e-9)


def test_linear_assignment_rejects_non_finite_costs() -> None:
    with pytest.raises(ValueError, match="finite"):
        linear_assignment(np.array([[0.0, np.inf]]))


box_strategy = st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0, 50), st.floats(0, 50)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
)


@settings(max_examples=100, deadline=None)
@given(a=st.lists(box_strategy, max_size=5), b=st.lists(box_strategy, max_size=5))
def test_box_iou_against_a_slow_reference(a: list, b: list) -> None:
    def ref(p: list, q: list) -> float:
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    got = box_iou(np.array(a).reshape(-1, 4), np.array(b).reshape(-1, 4))
    want = np.array([[ref(p, q) for q in b] for p in a]).reshape(len(a), len(b))
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert ((got >= 0) & (got <= 1 + 1e-12)).all()


# ---------------------------------------------------------------- Kalman filter


def test_kalman_learns_constant_velocity() -> None:
    truth = np.array([[100.0, 50.0, 40.0, 30.0]])
    velocity = np.array([[5.0, -2.0, 0.5, 0.0]])
    mean, cov = kalman.initiate(truth)
    for _ in range(15):
        truth = truth + velocity
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, truth)
    mean, _ = kalman.predict(mean, cov)
    np.testing.assert_allclose(mean[0, :4], (truth + velocity)[0], atol=0.5)
    np.testing.assert_allclose(mean[0, 4:], velocity[0], atol=0.2)


def test_kalman_does_not_mutate_and_keeps_covariance_symmetric() -> None:
    mean, cov = kalman.initiate(np.array([[10.0, 10.0, 0.0, 0.0], [50.0, 50.0, 20.0, 10.0]]))
    m0, c0 = mean.copy(), cov.copy()
    pm, pc = kalman.predict(mean, cov)
    um, uc = kalman.update(pm, pc, np.array([[11.0, 10.0, 1.0, 1.0], [52.0, 50.0, 20.0, 10.0]]))
    np.testing.assert_array_equal(mean, m0)
    np.testing.assert_array_equal(cov, c0)
    assert np.isfinite(um).all() and np.isfinite(uc).all()
    np.testing.assert_allclose(uc, uc.transpose(0, 2, 1), atol=1e-9)
    assert (np.linalg.eigvalsh(uc) > 0).all()


@pytest.mark.parametrize(("gate", "same_id"), [(0.0, False), (1.0, True)])
def test_fast_motion_matched_by_centre_distance(gate: float, same_id: bool) -> None:
    """An item swept 60 px per frame (no overlap with the prediction after a start from rest) keeps its
    id through the distance stage; with the stage off it is reborn."""
    tracker = Tracker(cfg(distance_gate=gate, min_hits=1))
    ids = []
    for x in (0, 0, 0, 60, 130, 210):
        tracks = tracker.update(dets([[100 + x, 100, 150 + x, 150]]))
        ids.append({int(t) for t, s in zip(tracks.track_id, tracks.state, strict=True) if s != REMOVED})
    assert (len(set().union(*ids)) == 1) == same_id


# ---------------------------------------------------------------- re-acquisition at the anchor


def confirmed_ids(outs: list[Tracks]) -> set[int]:
    return {int(i) for o in outs for i in o.track_id[o.state == CONFIRMED]}


def _slide_over(t: Tracker, hidden_frames: int, shift: float = 0.0) -> list[Tracks]:
    """Item A (a static 140x60 box) is confirmed; an item slid over it from the left hides it from
    the left edge on (A's visible box shrinks to the right), A is hidden for ``hidden_frames``,
    then A reappears from the left edge as the slider moves on (its box grows to the right).
    ``shift`` moves where it reappears down by that many box heights: an item that is not A."""
    x0, y0, w, h = 60.0, 175.0, 140.0, 60.0
    for _ in range(5):
        t.update(dets([[x0, y0, x0 + w, y0 + h]]))
    outs = []
    for cut in (30, 60, 90, 115):  # the slider covers A's left part
        outs.append(t.update(dets([[x0 + cut, y0, x0 + w, y0 + h]])))
    for _ in range(hidden_frames):
        outs.append(t.update(Detections.empty()))
    dy = shift * h
    for seen in (20, 45, 70, 100, 125, 140, 140, 140, 140, 140):  # A shows up again from the left
        outs.append(t.update(dets([[x0, y0 + dy, x0 + seen, y0 + dy + h]])))
    return outs


@pytest.mark.parametrize("hidden", [0, 3, 10])
def test_an_item_slid_over_keeps_its_id_when_it_shows_again(hidden: int) -> None:
    outs = _slide_over(Tracker(cfg(max_lost_frames=15, min_hits=5)), hidden)
    confirmed = confirmed_ids(outs)
    assert confirmed == {1}
    assert outs[-1].track_id[outs[-1].state == CONFIRMED].tolist() == [1]
    assert outs[-1].detection_index[outs[-1].track_id == 1].tolist() == [0]


def test_an_item_appearing_away_from_the_anchor_is_a_new_item() -> None:
    outs = _slide_over(Tracker(cfg(max_lost_frames=15, min_hits=5)), 3, shift=2.0)
    confirmed = confirmed_ids(outs)
    assert 1 in confirmed and len(confirmed) == 2


def test_the_item_that_slid_over_is_not_taken_for_the_hidden_one() -> None:
    # A (140x60) is confirmed; a bigger item B comes from the left over it and hides it. B's box
    # overlaps A's anchor but reaches beyond it: B is a new item, not A showing again.
    t = Tracker(cfg(max_lost_frames=15, min_hits=5))
    a = [60.0, 175.0, 200.0, 235.0]
    for _ in range(5):
        t.update(dets([a]))
    outs = []
    for right in (40, 90, 140, 190, 215, 215, 215, 215, 215, 215):  # B's right edge moves in
        b = [max(0.0, right - 160.0), 165.0, float(right), 245.0]
        a_seen = [[max(a[0], right), a[1], a[2], a[3]]] if right < a[2] - 10 else []
        outs.append(t.update(dets([b, *a_seen])))
    confirmed = confirmed_ids(outs)
    assert len(confirmed) == 2  # A (now hidden) and B, which got its own id
