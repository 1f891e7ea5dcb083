"""Baskets: one lane's item lifecycle (``item.*`` events) turned into a basket and its receipt.

``Baskets.update(events, now)`` takes the item events of one frame (in emission order) and returns
the ``basket.*`` events they cause; ``close(reason)`` closes the open basket (``api``, or
``end_of_stream`` at the end of a file). Built by the lane's ``EventFactory``, so basket events share
its ``seq`` and get stable ``event_id``s: the same item events give the same basket events on a replay.

Contract, per basket:
- ``basket.opened`` when an item enters and no basket is open.
- ``basket.item_added`` when the item's label first settles (``item.classified``, or an ``item.entered``
  that already names a product). An item still unrecognised is added as unknown when it leaves in
  ``belt`` mode, or when the basket closes while it is on the counter.
- ``basket.item_relabelled`` when an added item's product changes (with ``previous``).
- ``basket.item_removed`` in ``tray`` mode when an added item leaves the counter before the close;
  in ``belt`` mode leaving is passing through, and the item stays on the receipt.
- ``basket.needs_assist`` once per item and reason (``unknown_product``, ``low_margin``), and once per
  crowding (``too_many_items``: more than ``assist_max_items`` items on the counter at once).
- ``basket.closed`` with the receipt, after ``idle_close_s`` without item events (the capture clock:
  ``now`` is the frame's monotonic capture time), on ``close("api")`` or at the end of the stream.
  Items still on the counter then belong to the closed basket; their later events are ignored.

``replay(events)`` rebuilds a receipt from one basket's added/removed/relabelled events alone; it
always equals the receipt of its ``basket.closed`` (property-tested), so a consumer that applies the
deltas holds exactly the basket that will be charged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.config import BasketConfig

UNKNOWN = "unknown"
CLOSE_REASONS = ("idle", "api", "end_of_stream")


class BasketEventsLike(Protocol):
    run_id: str
    lane: str

    def basket(
        self,
        type: str,
        basket_id: str,
        fields: dict[str, Any],
        *,
        track_id: int | None = None,
        frame_index: int | None = None,
        capture_utc: str | None = None,
        age_ms: float | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Line:
    """One item on the receipt: its product (``unknown`` when not recognised) and label score."""

    product: str
    unknown: bool
    score: float


def receipt_of(lines: dict[int, Line]) -> dict[str, Any]:
    """``{items: [{product, quantity, track_ids, scores}] by product, unknown_items, unknown_track_ids}``."""
    by_product: dict[str, list[tuple[int, float]]] = {}
    unknown: list[int] = []
    for tid in sorted(lines):
        line = lines[tid]
        if line.unknown:
            unknown.append(tid)
        else:
            by_product.setdefault(line.product, []).append((tid, line.score))
    items = [
        {"product": p, "quantity": len(ev), "track_ids": [t for t, _ in ev], "scores": [s for _, s in ev]}
        for p, ev in sorted(by_product.items())
    ]
    return {"items": items, "unknown_items": len(unknown), "unknown_track_ids": unknown}


def apply(lines: dict[int, Line], event: dict[str, Any]) -> None:
    """Apply one basket event's delta to ``lines`` (track id -> line) in place; others change nothing."""
    type_ = event.get("type")
    if type_ in ("basket.item_added", "basket.item_relabelled"):
        lines[int(event["track_id"])] = Line(event["product"], bool(event["unknown"]), float(event["score"]))
    elif type_ == "basket.item_removed":
        lines.pop(int(event["track_id"]), None)


def replay(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The receipt that one basket's events describe (its ``basket.closed`` is not read)."""
    lines: dict[int, Line] = {}
    for event in events:
        apply(lines, event)
    return receipt_of(lines)


def _label(event: dict[str, Any]) -> Line:
    unknown = bool(event.get("unknown", True)) or event.get("label", UNKNOWN) == UNKNOWN
    return Line(UNKNOWN if unknown else str(event["label"]), unknown, float(event.get("score", 0.0)))


class Baskets:
    """One lane's basket; used from the thread that creates its events (not locked)."""

    def __init__(self, cfg: BasketConfig, events: BasketEventsLike) -> None:
        self.cfg = cfg
        self.events = events
        self.basket_id: str | None = None
        self.opened = 0  # baskets opened so far (the n in basket_id)
        self._present: dict[int, dict[str, Any]] = {}  # on the counter: track -> its last item event
        self._lines: dict[int, Line] = {}  # on the receipt
        self._assisted: set[tuple[int, str]] = set()
        self._crowded = False
        self._done: set[int] = set()  # still on the counter, but charged in a closed basket
        self._last_activity = 0.0
        self._close_requested = False

    @property
    def lines(self) -> dict[int, Line]:
        """The open basket's receipt lines (a copy)."""
        return dict(self._lines)

    def update(self, events: Sequence[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Basket events caused by one frame's events (non-item events are ignored) at capture time
        ``now``; an open basket idle for ``idle_close_s`` is closed first."""
        out: list[dict[str, Any]] = []
        if self._close_requested:
            self._close_requested = False
            out += self.close("api")
        if self.basket_id is not None and now - self._last_activity >= self.cfg.idle_close_s:
            out += self.close("idle")
        for event in events:
            handler = self._HANDLERS.get(event.get("type", ""))
            if handler is None:
                continue
            tid = int(event["track_id"])
            if tid in self._done:
                if event["type"] == "item.left":
                    self._done.discard(tid)
                continue
            if self.basket_id is None and event["type"] == "item.left":
                continue  # left before any basket knew it (entered before a restart)
            if self.basket_id is None:
                out += self._open()
            self._last_activity = now
            out += handler(self, tid, event)
        return out

    def request_close(self) -> None:
        """Ask, from any thread (an HTTP handler, the POS), that the open basket close with reason
        ``api`` at the next ``update``: the events are still made on the thread that owns them."""
        self._close_requested = True

    def close(self, reason: str = "api") -> list[dict[str, Any]]:
        """Close the open basket (items still unrecognised are added as unknown first); [] if none."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"basket close reason {reason!r}; valid reasons: {', '.join(CLOSE_REASONS)}")
        if self.basket_id is None:
            return []
        out: list[dict[str, Any]] = []
        for tid, event in list(self._present.items()):
            if tid not in self._lines:
                out += self._add(tid, event, Line(UNKNOWN, True, 0.0))
        out.append(self._emit("basket.closed", None, None, {"reason": reason, "receipt": receipt_of(self._lines)}))
        self._done |= set(self._present)
        self._present.clear()
        self._lines.clear()
        self._assisted.clear()
        self._crowded = False
        self.basket_id = None
        return out

    def reset(self) -> None:
        """Forget everything (a new stream); the basket counter keeps counting so ids stay unique."""
        self.basket_id = None
        self._present.clear()
        self._lines.clear()
        self._assisted.clear()
        self._done.clear()
        self._crowded = False

    # -- per item event ----------------------------------------------------------------------------
    def _entered(self, tid: int, event: dict[str, Any]) -> list[dict[str, Any]]:
        self._present[tid] = event
        out = self._crowding(event)
        label = _label(event)
        if not label.unknown and tid not in self._lines:
            out += self._add(tid, event, label)
        return out

    def _classified(self, tid: int, event: dict[str, Any]) -> list[dict[str, Any]]:
        new = tid not in self._present  # classified before entered: count it as entering now
        self._present[tid] = event
        out = self._crowding(event) if new else []
        label = _label(event)
        old = self._lines.get(tid)
        if old is None:
            return out + self._add(tid, event, label)
        if old.product != label.product:
            out += self._relabel(tid, event, label, old)
        return out

    def _left(self, tid: int, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._present.pop(tid, None) is None:
            return []
        if len(self._present) <= self.cfg.assist_max_items:
            self._crowded = False  # re-armed: crowding again asks again
        label = _label(event)
        old = self._lines.get(tid)
        if self.cfg.mode == "tray":
            if old is None:
                return []  # taken back before it was recognised: never on the receipt
            del self._lines[tid]
            return [self._emit("basket.item_removed", tid, event, {"product": old.product})]
        if old is None:
            return self._add(tid, event, label)
        if not label.unknown and label.product != old.product:
            return self._relabel(tid, event, label, old)
        return []

    _HANDLERS = {"item.entered": _entered, "item.classified": _classified, "item.left": _left}

    # -- basket events -----------------------------------------------------------------------------
    def _open(self) -> list[dict[str, Any]]:
        self.opened += 1
        self.basket_id = f"{self.events.run_id}/{self.events.lane}/{self.opened}"
        return [self._emit("basket.opened", None, None, {"mode": self.cfg.mode})]

    def _add(self, tid: int, event: dict[str, Any], label: Line) -> list[dict[str, Any]]:
        self._lines[tid] = label
        fields = {
            "product": label.product,
            "unknown": label.unknown,
            "score": label.score,
            "margin": float(event.get("margin", 0.0)) if not label.unknown else 0.0,
            "zone": event.get("zone"),
        }
        return [self._emit("basket.item_added", tid, event, fields), *self._assist(tid, event, label)]

    def _relabel(self, tid: int, event: dict[str, Any], label: Line, old: Line) -> list[dict[str, Any]]:
        self._lines[tid] = label
        fields = {
            "product": label.product,
            "previous": old.product,
            "unknown": label.unknown,
            "score": label.score,
            "margin": float(event.get("margin", 0.0)),
        }
        return [self._emit("basket.item_relabelled", tid, event, fields), *self._assist(tid, event, label)]

    def _assist(self, tid: int, event: dict[str, Any], label: Line) -> list[dict[str, Any]]:
        reason: str | None = None
        detail: dict[str, Any] = {}
        margin = float(event.get("margin", 0.0))
        if label.unknown and self.cfg.assist_unknown:
            reason, detail = "unknown_product", {"score": label.score}
        elif not label.unknown and margin < self.cfg.assist_min_margin:
            topk = event.get("topk") or []
            reason = "low_margin"
            detail = {
                "margin": margin,
                "min_margin": self.cfg.assist_min_margin,
                "products": [c["product"] for c in topk[:2]],
            }
        if reason is None or (tid, reason) in self._assisted:
            return []
        self._assisted.add((tid, reason))
        return [self._emit("basket.needs_assist", tid, event, {"reason": reason, "detail": detail})]

    def _crowding(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        count = len(self._present)
        if count <= self.cfg.assist_max_items:
            self._crowded = False
            return []
        if self._crowded:
            return []
        self._crowded = True
        detail = {"items": count, "max_items": self.cfg.assist_max_items}
        return [self._emit("basket.needs_assist", None, event, {"reason": "too_many_items", "detail": detail})]

    def _emit(
        self, type_: str, tid: int | None, cause: dict[str, Any] | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        assert self.basket_id is not None
        if cause is None:
            return self.events.basket(type_, self.basket_id, fields, track_id=tid)
        return self.events.basket(
            type_,
            self.basket_id,
            fields,
            track_id=tid,
            frame_index=cause.get("frame_index"),
            capture_utc=cause.get("capture_utc"),
            age_ms=cause.get("age_ms"),
        )
