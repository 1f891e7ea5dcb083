"""The delivery spool (no network): empty first, FIFO batches, in-flight batches never dropped and
resent unchanged until acked, overflow drops the oldest waiting and reports one gap per lane; on disk,
what was not acknowledged outlives a restart, a torn last line is skipped, the file stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.events import EventFactory, validate
from stream.sinks.base import SinkError
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


# -- on disk (events.spool_dir) ----------------------------------------------------------------------
def test_disk_spool_restores_what_was_not_acknowledged_in_order(tmp_path: Path) -> None:
    a = Spool(100, "t", tmp_path / "s")
    for e in events(5):
        a.put(e)
    a.ack(a.peek(2, 0.0)[-1][0])
    a.persist()
    b = Spool(100, "t", tmp_path / "s")  # a restart
    assert b.restored == 3 and seqs(b.peek(10, 0.0)) == [3, 4, 5]
    c = Spool(100, "t", tmp_path / "s")  # acks not yet persisted by b: all three still owed
    assert c.restored == 3
    b.ack(b.peek(10, 0.0)[-1][0])
    b.persist()
    assert (tmp_path / "s.jsonl").read_text() == "" and Spool(100, "t", tmp_path / "s").restored == 0
    b.put(events(1)[0])  # tickets keep counting after a restore: a later ack cannot cover it
    b.persist()
    assert Spool(100, "t", tmp_path / "s").restored == 1


def test_disk_spool_skips_a_line_cut_short_by_a_crash_and_stays_bounded(tmp_path: Path) -> None:
    a = Spool(4, "t", tmp_path / "s")
    for e in events(40):
        a.put(e)
        a.persist()
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) <= 2 * 4 + 4
    with open(tmp_path / "s.jsonl", "a") as f:
        f.write('{"t": 99, "e": {"seq"')  # the process died mid-write
    b = Spool(4, "t", tmp_path / "s")
    assert seqs(b.peek(10, 0.0)) == [37, 38, 39, 40]


def test_disk_spool_in_an_unwritable_place_is_a_one_line_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError, match="events.spool_dir") as err:
        Spool(4, "t", blocker / "sub" / "s")
    assert "\n" not in str(err.value)
