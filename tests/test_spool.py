"""The delivery spool (no network): empty first, FIFO batches, in-flight batches never dropped and
resent unchanged until acked, overflow drops the oldest waiting and reports one gap per lane."""

from __future__ import annotations

import pytest

from stream.events import EventFactory, validate
from stream.sinks.spool import Backoff, Spool


def events(n: int, lane: str = "default") -> list[dict]:
    f = EventFactory("run-s", "cam0", lane=lane)
    return [f.status("source.online", {"i": i}) for i in range(n)]


def seqs(batch: list) -> list:
    return [e.get("seq", ("gap", e.get("from_seq"), e.get("to_seq"))) for _, e in batch]


def test_empty_spool_gives_an_empty_batch() -> None:
    spool = Spool(3, "t")
    assert spool.peek(10, 0.0) == [] and len(spool) == 0


def test_batches_are_fifo_and_repeat_until_acked() -> None:
    spool = Spool(100, "t")
    for e in events(5):
        spool.put(e)
    first = spool.peek(3, 0.0)
    assert seqs(first) == [1, 2, 3] and spool.peek(3, 0.0) == first  # a retry sends the same batch
    spool.ack(first[-1][0])
    assert seqs(spool.peek(3, 0.0)) == [4, 5] and spool.acked == 3


def test_overflow_drops_the_oldest_waiting_never_the_batch_in_flight() -> None:
    spool = Spool(2, "t")
    evs = events(6)
    spool.put(evs[0])
    assert seqs(spool.peek(10, 0.0)) == [1]  # in flight
    for e in evs[1:]:
        spool.put(e)
    assert spool.dropped == 3 and len(spool) == 3
    spool.ack(spool.peek(10, 0.0)[-1][0])
    batch = spool.peek(10, 0.0)
    assert seqs(batch) == [("gap", 2, 4), 5, 6]
    gap = batch[0][1]
    validate(gap)
    assert (gap["dropped"], gap["lane"], gap["sink"]) == (3, "default", "t")


def test_one_gap_per_lane() -> None:
    spool = Spool(1, "t")
    for a, b in zip(events(3, "a"), events(3, "b"), strict=True):
        spool.put(a)
        spool.put(b)
    gaps = [e for _, e in spool.peek(10, 0.0) if e["type"] == "stream.gap"]
    assert [(g["lane"], g["from_seq"], g["to_seq"], g["dropped"]) for g in gaps] == [("a", 1, 3, 3), ("b", 1, 2, 2)]


@pytest.mark.parametrize(("initial", "maximum", "delays"), [(0.1, 0.5, [0.1, 0.2, 0.4, 0.5, 0.5]), (1, 1, [1, 1])])
def test_backoff_doubles_to_its_cap_and_resets(initial: float, maximum: float, delays: list) -> None:
    b = Backoff(initial, maximum)
    assert [b.next() for _ in delays] == pytest.approx(delays)
    b.reset()
    assert b.next() == initial
