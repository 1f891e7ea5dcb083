"""Station profile: reference, change mask, gate, profile files, onboarding (fake and real frames)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.cli import main
from stream.config import load_config
from stream.eval.count import parse_select
from stream.stages.station import (
    GatedSegmenter,
    GateParams,
    Station,
    StationError,
    build_reference,
    changed_mask,
    gate,
    load_station,
    save_station,
)
from stream.station.onboard import create_station, parse_counts, read_frames, station_info
from stream.types import SegMap

NAMES = ("background", "item", "boundary")
SIZE = (48, 64)  # (h, w)
BELT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "belt"


def _counter(seed: int, noise: float = 3.0) -> np.ndarray:
    """A textured counter (stripes and blotches) with sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float32)
    base = 90 + 40 * np.sin(xx / 3.0) + 20 * np.cos(yy / 5.0)
    img = np.stack([base, base * 0.9, base * 0.8], axis=2) + rng.normal(0, noise, (*SIZE, 3))
    return img.clip(0, 255).astype(np.uint8)


def _segmap(classes: np.ndarray) -> SegMap:
    return SegMap(
        classes=classes,
        confidence=np.ones(classes.shape, np.float32),
        class_names=NAMES,
        source_size=(classes.shape[1], classes.shape[0]),
    )


@pytest.fixture
def reference():  # type: ignore[no-untyped-def]
    return build_reference([_counter(s) for s in range(6)], SIZE)


def test_reference_of_no_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="no empty frames"):
        build_reference([], SIZE)


def test_reference_is_the_median_at_model_size(reference) -> None:  # type: ignore[no-untyped-def]
    assert reference.size == SIZE
    assert reference.median.dtype == np.uint8
    assert 0 < float(reference.noise.mean()) < 10  # sensor noise of 3 grey levels


# name, how the frame is changed, expected changed share (lo, hi) over the whole frame
CASES = [
    ("empty counter", lambda f: f, (0.0, 0.01)),
    ("darker light", lambda f: (f * 0.7).astype(np.uint8), (0.0, 0.01)),
    ("brighter light", lambda f: (f * 1.3).clip(0, 255).astype(np.uint8), (0.0, 0.02)),
    ("a shadow across", lambda f: np.concatenate([(f[:, :32] * 0.55).astype(np.uint8), f[:, 32:]], 1), (0.0, 0.05)),
]


@pytest.mark.parametrize(("name", "change", "share"), CASES, ids=[c[0] for c in CASES])
def test_light_and_shadows_are_not_changes(reference, name, change, share) -> None:  # type: ignore[no-untyped-def]
    mask = changed_mask(change(_counter(99)), reference, GateParams())
    assert share[0] <= mask.mean() <= share[1], mask.mean()


def test_an_object_is_a_change(reference) -> None:  # type: ignore[no-untyped-def]
    frame = _counter(99)
    frame[10:30, 20:40] = (30, 200, 60)
    mask = changed_mask(frame, reference, GateParams())
    assert mask[12:28, 22:38].mean() > 0.95
    assert mask[:, 50:].mean() < 0.01


def test_gate_keeps_items_only_near_changes(reference) -> None:  # type: ignore[no-untyped-def]
    frame = _counter(99)
    frame[10:30, 20:40] = (30, 200, 60)
    classes = np.zeros(SIZE, np.uint8)
    classes[10:30, 20:40] = 1  # the real item
    classes[35:45, 2:12] = 1  # a "fixture": part of the empty counter
    before = classes.copy()
    station = Station(root=Path("."), reference=reference, params=GateParams())
    out = station.apply(frame, _segmap(classes))
    assert (classes == before).all()  # inputs never mutated
    assert out.classes[10:30, 20:40].all()
    assert not out.classes[35:45, 2:12].any()


def test_gate_resizes_a_change_mask_of_another_size() -> None:
    seg = _segmap(np.ones((4, 4), np.uint8))
    changed = np.zeros((8, 8), bool)
    changed[:4, :4] = True
    out = gate(seg, changed, GateParams(reach=0))
    assert out.classes.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("bad", [{"k": -1}, {"floor": 300}, {"reach": 100}, {"shadow_spread": 2}])
def test_gate_params_have_bounds(bad: dict) -> None:
    with pytest.raises(ValueError, match="station gate"):
        GateParams(**bad)


def test_profile_round_trip_and_errors(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    save_station(tmp_path / "st", reference, GateParams(k=5.0), {"zones": [], "model": None})
    st = load_station(tmp_path / "st")
    assert st.params.k == 5.0
    assert (st.reference.median == reference.median).all()
    assert np.abs(st.reference.noise - reference.noise).max() <= 0.01
    with pytest.raises(StationError, match="not a station profile"):
        load_station(tmp_path / "nowhere")
    (tmp_path / "st" / "station.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(StationError, match="format"):
        load_station(tmp_path / "st")
    (tmp_path / "st" / "station.json").write_text("{")
    with pytest.raises(StationError, match="JSON"):
        load_station(tmp_path / "st")


def test_gated_segmenter_wraps_any_segmenter(reference) -> None:  # type: ignore[no-untyped-def]
    class Fake:
        input_size = SIZE

        def segment(self, image: np.ndarray) -> SegMap:
            return _segmap(np.ones(image.shape[:2], np.uint8))

        def segment_batch(self, images: list[np.ndarray]) -> list[SegMap]:
            return [self.segment(i) for i in images]

        def reset(self) -> None:
            pass

    gated = GatedSegmenter(Fake(), Station(root=Path("."), reference=reference, params=GateParams()))
    assert gated.input_size == SIZE
    assert not gated.segment(_counter(99)).classes.any()  # the empty counter: nothing survives
    assert len(gated.segment_batch([_counter(1), _counter(2)])) == 2


@pytest.mark.parametrize(("text", "expected"), [("3-5:1", {3: 1, 4: 1, 5: 1}), ("0:2,7-8:0", {0: 2, 7: 0, 8: 0})])
def test_parse_counts(text: str, expected: dict[int, int]) -> None:
    assert parse_counts(text) == expected


@pytest.mark.parametrize("text", ["3-5", "3-5:x", "a:1"])
def test_parse_counts_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="check-counts|select"):
        parse_counts(text)


def test_read_frames(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), _counter(i))
    assert len(read_frames(tmp_path)) == 4
    assert len(read_frames(tmp_path, parse_select("1-2"))) == 2
    with pytest.raises(ValueError, match="--frames"):
        read_frames(tmp_path, parse_select("10-12"))
    with pytest.raises(FileNotFoundError, match="no such"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="no decodable frames"):
        read_frames(tmp_path / "x.mp4")


@pytest.mark.slow
def test_create_station_end_to_end(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(4):
        cv2.imwrite(str(empty / f"{i}.png"), cv2.resize(_counter(i), (320, 240)))
    cfg = load_config(overrides={"segment.model.provider": "cpu"})
    info = create_station(
        tmp_path / "st", empty, segment_cfg=cfg.segment, boxes_cfg=cfg.boxes, track_cfg=cfg.track, progress=False
    )
    assert info["empty_frames"] == 4
    assert info["validation"]["empty_holdout"]["n_frames"] == 2
    assert info["validation"]["empty_holdout"]["items_per_frame_station"] == 0.0
    assert "Held-out empty frames" in station_info(tmp_path / "st")
    with pytest.raises(ValueError, match="--check-counts"):
        create_station(
            tmp_path / "st2", empty, segment_cfg=cfg.segment, boxes_cfg=cfg.boxes, track_cfg=cfg.track, check=empty
        )


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not BELT.is_dir(), reason="../shared/data/real/belt is absent")
def test_belt_onboarded_from_its_empty_frames(tmp_path: Path) -> None:
    spec = json.loads((BELT / "bolt.json").read_text())
    clip = BELT / spec["clip"]
    a, b = spec["empty_frames"]
    counts = ",".join(f"{lo}-{hi}:{n}" for (lo, hi), n in spec["stable_counts"])
    cfg = load_config(overrides={"segment.model.provider": "cpu"})
    info = create_station(
        tmp_path / "belt",
        clip,
        segment_cfg=cfg.segment,
        boxes_cfg=cfg.boxes,
        track_cfg=cfg.track,
        frames=[(a, b)],
        check=clip,
        check_counts_text=counts,
        progress=False,
    )
    assert info["validation"]["empty_holdout"]["items_per_frame_station"] == 0.0
    # Segmenter v3: 27 of the 31 labelled frames (87.1%); the misses are the bolt seen as two pieces in
    # four frames (stream/models/segmenter.md). One frame fewer fails.
    assert info["validation"]["check"]["right_station"] >= 27 / 31 - 1e-9


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not BELT.is_dir(), reason="../shared/data/real/belt is absent")
def test_belt_cli_onboard_then_run_with_the_station(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's worked example through the real CLI: `station create` on the clip's empty frames,
    `station info`, then `run --station` with a counting zone on the right half: the one bolt enters
    once, every item event names the zone, and a missing profile is a one-line error."""
    spec = json.loads((BELT / "bolt.json").read_text())
    clip = BELT / spec["clip"]
    a, b = spec["empty_frames"]
    station = tmp_path / "belt"
    right_half = "240,0 480,0 480,270 240,270"
    rc = main(["station", "create", str(station), "--empty", str(clip), "--frames", f"{a}-{b}", "--zone", right_half])
    assert rc == 0
    assert main(["station", "info", str(station)]) == 0
    assert "zone1" in capsys.readouterr().out
    events = tmp_path / "events.jsonl"
    rc = main(["run", str(clip), "--station", str(station), "--no-display", "--events", f"jsonl:{events}"])
    assert rc == 0
    items = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"].startswith("item.")]
    assert [e["type"] for e in items if e["type"] == "item.entered"] == ["item.entered"] * spec["items"]
    assert {e["zone"] for e in items} == {"zone1"}
    assert all(e["bbox"][0] + e["bbox"][2] >= 2 * 240 for e in items)  # centre inside the right half
    assert main(["run", str(clip), "--station", str(tmp_path / "nope"), "--no-display"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("checkout-stream: error:") and "station create" in err[-1]
