"""The threaded runtime with fake stages: same results as one thread, no loss offline, drops and
bounded age for a live source, prompt stop, status events, summary."""

from __future__ import annotations

import threading
import time

import pytest

from stream.config import load_config
from stream.events import EventFactory
from stream.pipeline import Pipeline
from stream.runtime import Runtime
from stream.sinks import MemorySink
from stream.sources.base import Source, SourceProperties, SourceStatus
from stream.stages.classify import Classifier
from stream.stages.track import Tracker
from stream.stats import Percentiles
from tests.fakes import ScriptedDetector, frame

pytestmark = pytest.mark.timeout(60)


class ListSource(Source):
    def __init__(self, n, live=False, interval=0.0, stop=None):
        self.n, self.interval = n, interval
        self.i = 0
        self._props = SourceProperties(name="list", is_live=live, realtime=live, fps=30.0)
        self.stop = stop or threading.Event()

    @property
    def properties(self):
        return self._props

    def read(self):
        if self.i >= self.n or self.stop.is_set():
            return None
        if self.interval:
            time.sleep(self.interval)
        f = frame(self.i, t=time.monotonic())
        self.i += 1
        return f

    def close(self):
        pass


class ClosingSink(MemorySink):
    closed = False

    def close(self):
        self.closed = True


class SlowDetector(ScriptedDetector):
    def __init__(self, script, delay):
        super().__init__(script)
        self.delay = delay

    def segment(self, image):
        time.sleep(self.delay)
        return super().segment(image)


def make(source, script, delay=0.0, threaded=True, stop=None):
    cfg = load_config()
    det = SlowDetector(script, delay)
    events = EventFactory("run", source.properties.name)
    pipe = Pipeline(det, det, Tracker(cfg.track), Classifier(cfg.classify, None, None), events)
    sink = ClosingSink()
    rt = Runtime(source, pipe, events, sink, [], threaded=threaded, stats_interval_s=0, stop=stop)
    return rt, sink


SCRIPT = {i: [(10 + i, 10, 40 + i, 40)] for i in range(30)}


def strip(events):
    return [(e["type"], e["track_id"], e["frame_index"]) for e in events]


def test_empty_source_gives_only_a_summary():
    rt, sink = make(ListSource(0), {})
    summary = rt.run()
    assert [e["type"] for e in sink.events] == ["run.summary"] and sink.closed
    assert summary["frames_read"] == 0


def test_threaded_matches_sequential_and_loses_nothing_offline():
    rt1, s1 = make(ListSource(40), SCRIPT, threaded=False)
    rt2, s2 = make(ListSource(40), SCRIPT, delay=0.002, threaded=True)
    rt1.run()
    sum2 = rt2.run()
    assert strip(s1.events[:-1]) == strip(s2.events[:-1])
    assert sum2["frames_processed"] == 40 and sum2["frames_dropped"] == 0
    assert [e["seq"] for e in s2.events] == list(range(1, len(s2.events) + 1))


def test_live_source_with_slow_stage_drops_and_keeps_age_bounded():
    rt, sink = make(ListSource(60, live=True, interval=0.005), SCRIPT, delay=0.03)
    summary = rt.run()
    assert summary["frames_dropped"] > 0
    assert summary["frames_processed"] + summary["frames_dropped"] <= 60
    # age: at most ~the work in flight (detect + update + a queued frame), never the backlog
    assert summary["frame_age_ms"]["p99"] < 200


def test_stop_ends_run_within_a_second():
    stop = threading.Event()
    src = ListSource(10**6, live=True, interval=0.01, stop=stop)
    rt, sink = make(src, {}, stop=stop)
    t = threading.Thread(target=rt.run)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert sink.events[-1]["type"] == "run.summary" and sink.closed


def test_status_events_are_published_in_seq_order():
    rt, sink = make(ListSource(20, live=True, interval=0.005), SCRIPT)
    rt.inbox.put(SourceStatus("source.online", {"width": 160, "height": 120}))
    rt.run()
    types = [e["type"] for e in sink.events]
    assert "source.online" in types
    assert [e["seq"] for e in sink.events] == list(range(1, len(sink.events) + 1))


def test_percentiles_window_is_a_ring():
    p = Percentiles(window=4)
    assert p.summary() == {"p50": 0.0, "p95": 0.0, "p99": 0.0} and len(p) == 0
    for v in (100, 100, 1, 2, 3, 4):  # the two 100s fall out of the window
        p.add(v)
    assert len(p) == 4 and p.summary()["p99"] < 5
