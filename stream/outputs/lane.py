"""One lane's operations surface, as the composition root builds it: ``LaneState`` (what the HTTP
server reads: readiness, state, picture, metrics) and ``LaneHttp`` (the server, the ``LiveView`` and
the hook-up to a runtime and its sinks).

``LaneHttp`` starts before the models load, so /healthz answers and /readyz says why it is not ready
during start-up; ``attach`` connects it to the runtime once that is built (models are loaded by
then); ``close`` stops the server after the run. It is the runtime's frame observer (``processed``,
``drawn``): the histograms see every frame, and the view keeps the newest result. Every reading is a
snapshot taken on the server's threads: the frame loop only pays reference swaps, deque appends and
``LaneMetrics.observe_frame`` (a few microseconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from stream.config import HttpConfig
from stream.outputs.http import HttpServer, parse_bind
from stream.outputs.live import LiveView, Picture
from stream.outputs.metrics import LaneMetrics
from stream.types import FrameResult


class StatsLike(Protocol):
    frames_read: int
    frames_processed: int
    frames_dropped: int


class RuntimeLike(Protocol):
    """What ``attach`` reads of a ``stream.runtime.Runtime`` (``stats`` is replaced when a run starts,
    so it is read afresh each time)."""

    stats: Any

    def status_line(self) -> str: ...


class DrawerLike(Protocol):
    def draw(self, result: FrameResult, status: str = "") -> np.ndarray: ...


class SinkStatsLike(Protocol):
    def stats(self) -> dict[str, Any]: ...


class BasketsLike(Protocol):
    """What ``POST /api/basket/close`` needs of ``stream.baskets.Baskets`` (any thread)."""

    basket_id: str | None

    def request_close(self) -> None: ...


class LaneState:
    """The ``StateProvider`` of one lane: a ``LiveView`` and its ``LaneMetrics``, plus the readiness
    rule: models loaded, the source online (a file with no status counts while frames flow) and a
    frame processed within ``cfg.ready_frames_s``."""

    def __init__(
        self,
        cfg: HttpConfig,
        view: LiveView,
        counters: Callable[[], Mapping[str, Any]],
        *,
        sinks: Callable[[], Mapping[str, Any]] | None = None,
        models_loaded: Callable[[], bool] = lambda: True,
        running: Callable[[], bool] = lambda: True,
        identity: Mapping[str, Any] | None = None,
        lane: str = "default",
    ) -> None:
        self.cfg = cfg
        self.lane = lane
        self.baskets: BasketsLike | None = None  # set once the lane is built (``LaneHttp.attach``)
        self.view = view
        self._counters = counters
        self._models_loaded = models_loaded
        self._running = running
        self.metrics = LaneMetrics(
            lane, view, counters, sinks=sinks, ready=lambda: self.readiness()[0], running=running, identity=identity
        )
        self.registry = self.metrics.registry

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        since = self.view.seconds_since_frame()
        online = self.view.source()["online"]
        checks = {
            "models_loaded": bool(self._models_loaded()),
            "source_online": bool(online) if online is not None else since is not None,
            "frames_flowing": since is not None and since <= self.cfg.ready_frames_s,
            "running": bool(self._running()),
        }
        reasons = []
        if not checks["models_loaded"]:
            reasons.append("models are still loading")
        if not checks["source_online"]:
            reasons.append("the source is offline (reconnecting)" if online is False else "no frame read yet")
        if not checks["frames_flowing"] and since is not None:
            reasons.append(f"no frame processed for {since:.1f} s (limit {self.cfg.ready_frames_s:g} s)")
        if not checks["running"]:
            reasons.append("the run has ended")
        ready = all(checks.values())
        body = {
            "ready": ready,
            "lane": self.lane,
            "checks": checks,
            "reasons": reasons,
            "last_frame_s": None if since is None else round(since, 3),
        }
        return ready, body

    def state(self) -> dict[str, Any]:
        counters = self._counters()
        return {
            "lane": self.lane,
            "ready": self.readiness()[0],
            "live_fps": self.cfg.live_fps,
            "frame": self.view.frame_info(),
            "items": self.view.items(),
            "events": self.view.last_events(),
            "source": self.view.source(),
            "basket_items": self.view.basket_items(),
            "counters": {
                k: counters[k] for k in ("frames_read", "frames_processed", "frames_dropped") if k in counters
            },
        }

    def picture(self) -> Picture | None:
        return self.view.jpeg()

    def close_basket(self) -> tuple[int, dict[str, Any]]:
        """``POST /api/basket/close``: ask the lane to close its open basket (reason ``api``). The
        close is made on the lane's own thread at its next frame, so the answer is 202 (accepted) and
        ``basket.closed`` with the receipt arrives on the event sinks; 409 when baskets are off."""
        baskets = self.baskets
        if baskets is None:
            return 409, {"error": "this lane keeps no baskets (basket.enabled is false)", "lane": self.lane}
        open_id = baskets.basket_id
        if open_id is None:
            return 200, {"lane": self.lane, "basket_id": None, "closing": False, "reason": "no basket is open"}
        baskets.request_close()
        return 202, {"lane": self.lane, "basket_id": open_id, "closing": True}

    def select(self, lane: str) -> LaneState | None:
        """This lane's state when ``lane`` names it (``?lane=NAME`` on any route), else None."""
        return self if lane == self.lane else None


def lane_identity(segmenter: Any = None, embedder: Any = None, catalog: Any = None) -> dict[str, Any]:
    """{"models": {role: {name, version, sha256[, provider]}}, "catalog": {...}} from the stages'
    ``identity`` (and the embedder's ``model.provider``) and ``catalog.info()``; absent parts are left
    out."""
    models: dict[str, dict[str, str]] = {}
    for role, stage in (("segmenter", segmenter), ("embedder", embedder)):
        ident = getattr(stage, "identity", None)
        if ident:
            models[role] = {k: str(v) for k, v in dict(ident).items()}
            provider = getattr(getattr(stage, "model", None), "provider", None)
            if provider:
                models[role]["provider"] = str(provider)
    out: dict[str, Any] = {"models": models}
    info = catalog.info() if catalog is not None and hasattr(catalog, "info") else None
    if info:
        embedded = info.get("embedder") or {}
        out["catalog"] = {
            "products": info.get("products", ""),
            "vectors": info.get("vectors", ""),
            "index": info.get("index", ""),
            "created": info.get("created", ""),
            "embedder": f"{embedded.get('name', '')} v{embedded.get('version', '')}",
            "embedder_sha256": embedded.get("sha256", ""),
        }
    return out


class LaneHttp:
    """See the module docstring. ``token`` is ``events.token`` (required for a non-loopback bind);
    ``lane`` labels the metrics and answers. ``serve=False`` builds the lane's state without a server
    of its own (``LanesHttp`` serves several lanes on one)."""

    def __init__(self, cfg: HttpConfig, token: str = "", lane: str = "default", *, serve: bool = True) -> None:
        self.cfg = cfg
        self.lane = lane
        self.view = LiveView(cfg)
        self._runtime: RuntimeLike | None = None
        self._sinks: SinkStatsLike | None = None
        self.state = LaneState(
            cfg,
            self.view,
            self._counters,
            sinks=self._sink_stats,
            models_loaded=lambda: self._runtime is not None,
            running=lambda: not self.view.closed,
            lane=lane,
        )
        self.metrics = self.state.metrics
        self.server = _server(cfg, self.state, token) if serve else None

    @property
    def url(self) -> str:
        assert self.server is not None, "a lane served by LanesHttp has no server of its own"
        return self.server.url

    def start(self) -> LaneHttp:
        if self.server is not None:
            self.server.start()
        return self

    def attach(
        self,
        runtime: RuntimeLike,
        sinks: SinkStatsLike,
        identity: Mapping[str, Any] | None = None,
        draw: DrawerLike | None = None,
        baskets: BasketsLike | None = None,
    ) -> None:
        """The lane is built: read its counters from ``runtime.stats`` and its sinks' ``stats()``;
        ``draw`` is the overlay for frames the view draws itself (with the runtime's status line);
        ``baskets`` the lane's basket layer, for ``POST /api/basket/close``."""
        self.metrics.identity = dict(identity or {})
        self.state.baskets = baskets
        self._sinks = sinks
        if draw is not None:
            self.view.draw = lambda result: draw.draw(result, runtime.status_line())
        self._runtime = runtime

    # -- the runtime's frame observer (update and output threads: O(1) plus a histogram observe) ----
    def processed(self, result: FrameResult, age_ms: float) -> None:
        """One processed frame: its stage times and age into the histograms, the result to the view."""
        t = result.times
        self.metrics.observe_frame(
            {"segment": t.segment, "boxes": t.boxes, "track": t.track, "classify": t.classify}, age_ms
        )
        self.view.observe(result)

    def drawn(self, overlay_ms: float) -> None:
        """The runtime drew one frame's overlay for its outputs, in ``overlay_ms``."""
        self.metrics.observe_frame({"overlay": overlay_ms}, None)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def __enter__(self) -> LaneHttp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _counters(self) -> dict[str, Any]:
        rt = self._runtime
        if rt is None:
            return {}
        st = rt.stats
        return {
            "frames_read": st.frames_read,
            "frames_processed": st.frames_processed,
            "frames_dropped": st.frames_dropped,
        }

    def _sink_stats(self) -> dict[str, Any]:
        return self._sinks.stats() if self._sinks is not None else {}


def _server(cfg: HttpConfig, provider: Any, token: str) -> HttpServer:
    host, port = parse_bind(cfg.bind)
    return HttpServer(
        host, port, provider, token=token, max_clients=cfg.max_clients, client_timeout_s=cfg.client_timeout_s
    )


class MergedRegistry:
    """The lanes' registries read as one (a ``prometheus_client`` collector): each family once, with
    every lane's samples (they differ by their ``lane`` label), so one scrape sees every lane."""

    def __init__(self, registries: Callable[[], list[CollectorRegistry]]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for registry in self._registries():
            for fam in registry.collect():
                merged = families.get(fam.name)
                if merged is None:
                    merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                merged.samples.extend(fam.samples)
        yield from families.values()


class LanesState:
    """The ``StateProvider`` of several lanes on one server. Without ``?lane=NAME``: /readyz is ready
    when every lane is (the body has each lane's), /api/state has every lane's state under
    ``lanes``, /api/frame.jpg and /live are the first lane's; /metrics always has every lane."""

    def __init__(self) -> None:
        self._lanes: dict[str, LaneState] = {}
        self.registry = CollectorRegistry()
        self.registry.register(MergedRegistry(lambda: [s.registry for s in list(self._lanes.values())]))

    def add(self, state: LaneState) -> None:
        self._lanes[state.lane] = state

    @property
    def default_lane(self) -> str | None:
        return next(iter(self._lanes), None)

    def lane_names(self) -> list[str]:
        return list(self._lanes)

    def select(self, lane: str) -> LaneState | None:
        return self._lanes.get(lane)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        bodies = {name: s.readiness()[1] for name, s in list(self._lanes.items())}
        reasons = [f"lane {name}: {r}" for name, b in bodies.items() for r in b["reasons"]]
        ready = bool(bodies) and all(b["ready"] for b in bodies.values())
        return ready, {"ready": ready, "reasons": reasons or ([] if bodies else ["no lane yet"]), "lanes": bodies}

    def state(self) -> dict[str, Any]:
        return {"lanes": {name: s.state() for name, s in list(self._lanes.items())}}

    def picture(self) -> Picture | None:
        first = self.default_lane
        return self._lanes[first].picture() if first is not None else None

    def close_basket(self) -> tuple[int, dict[str, Any]]:
        return 400, {"error": "several lanes: name one with ?lane=NAME", "lanes": self.lane_names()}


class LanesHttp:
    """One HTTP server for several lanes (``run --lanes``): ``lane(name)`` makes each lane's
    ``LaneHttp`` (no server of its own) and adds it to the routes; ``?lane=NAME`` on /readyz,
    /api/state, /api/frame.jpg and /live picks one lane."""

    def __init__(self, cfg: HttpConfig, token: str = "") -> None:
        self.cfg = cfg
        self.state = LanesState()
        self.server = _server(cfg, self.state, token)

    @property
    def url(self) -> str:
        return self.server.url

    def lane(self, name: str) -> LaneHttp:
        lane = LaneHttp(self.cfg, lane=name, serve=False)
        self.state.add(lane.state)
        return lane

    def start(self) -> LanesHttp:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> LanesHttp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
