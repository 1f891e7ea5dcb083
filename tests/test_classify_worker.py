"""Classification off the frame loop: the batch worker (bounded, errors surfaced, joined on close), the
classifier on its worker thread (a burst of new items never delays tracking, labels arrive later, the
per-second budget holds) and the runtime's choice of worker (thread live, inline offline)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stream.config import load_config
from stream.events import EventFactory, validate
from stream.pipeline import Pipeline
from stream.runtime import Runtime, StageFailed
from stream.sinks import MemorySink
from stream.sources.base import Source, SourceProperties
from stream.stages.classify import Classifier
from stream.stages.embed_worker import BatchWorker, WorkerError
from stream.stages.track import Tracker
from stream.types import Frame
from tests.fakes import BruteCatalog, MeanColourEmbedder, ScriptedDetector

pytestmark = pytest.mark.timeout(60)

RED, BLUE = (0, 0, 230), (230, 0, 0)
CATALOG = {"red-thing": np.array([0, 0, 230, 40.0]), "blue-thing": np.array([230, 0, 0, 40.0])}


def classify_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "classify"]


# ----------------------------------------------------------------------------------- BatchWorker


def test_worker_batches_refuses_past_capacity_and_joins_on_close():
    gate = threading.Event()
    calls: list[int] = []

    def fn(jobs: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(len(jobs))
        return [j * 10 for j in jobs]

    w: BatchWorker[int, int] = BatchWorker(fn, capacity=3, batch=2, name="classify")
    w.start()
    assert [w.submit(i) for i in range(4)] == [True, True, True, False]  # never blocks, refuses the 4th
    assert w.collect() == [] and w.room == 0
    gate.set()
    assert w.wait(5)
    assert sorted(w.collect()) == [0, 10, 20] and w.room == 3 and sum(calls) == 3 and max(calls) <= 2
    w.close()
    assert not w.alive and classify_threads() == []


def test_worker_error_surfaces_once_as_a_clear_error_not_a_hang():
    def fn(jobs: list[int]) -> list[int]:
        raise ValueError("model exploded")

    w: BatchWorker[int, int] = BatchWorker(fn, capacity=2, batch=2, name="classify")
    w.start()
    w.submit(1)
    with pytest.raises(WorkerError, match="classify failed: ValueError: model exploded"):
        w.wait(5)
    with pytest.raises(WorkerError):
        w.collect()
    w.close()
    assert not w.alive


# ----------------------------------------------------------------------------------- the classifier


class SlowEmbedder(MeanColourEmbedder):
    """The colour embedder plus a fixed delay per call: a stand-in for a real model on a small CPU."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.crops = 0

    def embed(self, crops):
        time.sleep(self.delay_s)
        self.crops += len(crops)
        return super().embed(crops)


def painted(index: int, items, t: float) -> Frame:
    img = np.full((120, 320, 3), 90, np.uint8)
    for (x1, y1, x2, y2), colour in items:
        img[y1:y2, x1:x2] = colour
    return Frame(img, index, t, 1.7e9 + t, "fake")


def ten_items(n_frames: int):
    """Ten items that all appear on frame 5 (red and blue alternating) and stay."""
    boxes = [((5 + 31 * k, 30, 30 + 31 * k, 60), RED if k % 2 else BLUE) for k in range(10)]
    script = {i: ([b for b, _ in boxes] if i >= 5 else []) for i in range(n_frames)}
    return script, boxes


def build(script, embedder, overrides=None):
    cfg = load_config(overrides=overrides or {})
    det = ScriptedDetector(script)
    clf = Classifier(cfg.classify, embedder, BruteCatalog(CATALOG))
    return Pipeline(det, det, Tracker(cfg.track), clf, EventFactory("run", "fake")), clf


def test_a_burst_of_ten_new_items_never_delays_tracking():
    script, boxes = ten_items(120)
    emb = SlowEmbedder(0.08)  # 80 ms a call: inline, every update with crops would take that long
    pipe, clf = build(script, emb, {"classify.crops_per_s": 40.0})
    pipe.start(background=True)
    events, update_ms = [], []
    t0 = time.monotonic()
    for i in range(120):
        frame = painted(i, boxes if i >= 5 else [], time.monotonic())
        detected = pipe.detect(frame)
        s = time.perf_counter()
        events += pipe.update(detected).events
        update_ms.append((time.perf_counter() - s) * 1000)
        time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))  # paced at 30 fps
    events += pipe.finish()
    pipe.close()
    assert max(update_ms) < 40, f"an update waited for the embedder: {max(update_ms):.0f} ms"
    entered = [e for e in events if e["type"] == "item.entered"]
    classified = [e for e in events if e["type"] == "item.classified"]
    assert len(entered) == 10
    assert {e["track_id"] for e in classified} == {e["track_id"] for e in entered}, "every item got its label"
    # labels arrive asynchronously: later frames than the ones their items entered on
    first_seen = min(e["frame_index"] for e in entered)
    assert min(e["frame_index"] for e in classified) > first_seen
    for e in classified:
        validate(e)
    assert classify_threads() == []


def test_labels_in_the_background_match_inline_labels():
    script, boxes = ten_items(90)

    def labels(background: bool) -> dict[int, str]:
        pipe, _ = build(script, MeanColourEmbedder())
        pipe.start(background=background, fps=None if background else 30.0)
        events = []
        for i in range(90):
            events += pipe.process(painted(i, boxes if i >= 5 else [], i / 30)).events
            if background:
                time.sleep(0.005)
        events += pipe.finish()
        pipe.close()
        return {e["track_id"]: e["label"] for e in events if e["type"] == "item.left"}

    inline, threaded = labels(False), labels(True)
    assert len(inline) == 10 and threaded == inline


def test_the_budget_is_per_second_of_stream_time():
    script, boxes = ten_items(150)
    emb = MeanColourEmbedder()
    cfg_rate, batch = 15.0, 3
    pipe, clf = build(
        script, emb, {"classify.crops_per_s": cfg_rate, "classify.batch": batch, "classify.refresh_frames": 1}
    )
    pipe.start(background=False, fps=30.0)  # the frame clock: index / 30
    per_frame = []
    for i in range(150):
        before = clf.crops_embedded
        pipe.process(painted(i, boxes if i >= 5 else [], 1000.0))  # capture time ignored with a frame clock
        per_frame.append(clf.crops_embedded - before)
    pipe.close()
    seconds = 150 / 30
    assert max(per_frame) <= batch
    assert cfg_rate * seconds * 0.9 <= sum(per_frame) <= cfg_rate * seconds + batch


def test_reset_discards_crops_in_flight():
    script, boxes = ten_items(20)
    gate = threading.Event()

    class Gated(MeanColourEmbedder):
        def embed(self, crops):
            gate.wait(5)
            return super().embed(crops)

    pipe, clf = build(script, Gated())
    pipe.start(background=True)
    for i in range(12):
        pipe.process(painted(i, boxes if i >= 5 else [], i / 30))
    assert clf._worker is not None and clf._worker.in_flight > 0
    pipe.reset()
    gate.set()
    clf._worker.wait(5)
    result = pipe.process(painted(13, [], 13 / 30))
    assert [e for e in result.events if e["type"] == "item.classified"] == []
    assert all(clf.label(t) is None for t in range(100))
    pipe.close()


# ----------------------------------------------------------------------------------- the runtime


class Paced(Source):
    def __init__(self, n: int, script_boxes, live: bool, stop: threading.Event) -> None:
        self.n, self.boxes, self.i, self.stop = n, script_boxes, 0, stop
        self._props = SourceProperties(name="paced", is_live=live, realtime=live, fps=30.0)

    @property
    def properties(self) -> SourceProperties:
        return self._props

    def read(self):
        if self.i >= self.n or self.stop.is_set():
            return None
        if self._props.realtime:
            time.sleep(1 / 30)
        f = painted(self.i, self.boxes if self.i >= 5 else [], time.monotonic())
        self.i += 1
        return f

    def close(self) -> None:
        pass


def runtime(embedder, live: bool, n: int = 60):
    script, boxes = ten_items(n)
    pipe, clf = build(script, embedder)
    stop = threading.Event()
    events = EventFactory("run", "paced")
    sink = MemorySink()
    rt = Runtime(Paced(n, [b for b in boxes], live, stop), pipe, events, sink, [], stats_interval_s=0, stop=stop)
    return rt, sink


@pytest.mark.parametrize(("live", "mode"), [(False, "inline"), (True, "thread")])
def test_runtime_embeds_in_the_background_only_for_realtime_sources(live, mode):
    rt, sink = runtime(MeanColourEmbedder(), live)
    summary = rt.run()
    assert summary["classify"]["mode"] == mode and summary["classify"]["crops_embedded"] > 0
    assert any(e["type"] == "item.classified" for e in sink.events)
    assert classify_threads() == []


def test_a_failing_embedder_ends_the_run_with_one_clear_error():
    class Broken(MeanColourEmbedder):
        def embed(self, crops):
            raise RuntimeError("out of device memory")

    rt, sink = runtime(Broken(), live=True, n=300)
    t0 = time.monotonic()
    with pytest.raises(StageFailed, match="update stage failed: WorkerError: classify failed: RuntimeError: out of"):
        rt.run()
    assert time.monotonic() - t0 < 5, "the failure must stop the run, not hang it"
    assert sink.events[-1]["type"] == "run.summary"
    assert classify_threads() == []
