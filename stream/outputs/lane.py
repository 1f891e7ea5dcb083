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

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

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
    ) -> None:
        self.cfg = cfg
        self.view = view
        self._counters = counters
        self._models_loaded = models_loaded
        self._running = running
        self.metrics = LaneMetrics(
            cfg.lane, view, counters, sinks=sinks, ready=lambda: self.readiness()[0], running=running, identity=identity
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
            "lane": self.cfg.lane,
            "checks": checks,
            "reasons": reasons,
            "last_frame_s": None if since is None else round(since, 3),
        }
        return ready, body

    def state(self) -> dict[str, Any]:
        counters = self._counters()
        return {
            "lane": self.cfg.lane,
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
    """See the module docstring. ``token`` is ``events.token`` (required for a non-loopback bind)."""

    def __init__(self, cfg: HttpConfig, token: str = "") -> None:
        host, port = parse_bind(cfg.bind)
        self.cfg = cfg
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
        )
        self.metrics = self.state.metrics
        self.server = HttpServer(
            host, port, self.state, token=token, max_clients=cfg.max_clients, client_timeout_s=cfg.client_timeout_s
        )

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> LaneHttp:
        self.server.start()
        return self

    def attach(
        self,
        runtime: RuntimeLike,
        sinks: SinkStatsLike,
        identity: Mapping[str, Any] | None = None,
        draw: DrawerLike | None = None,
    ) -> None:
        """The lane is built: read its counters from ``runtime.stats`` and its sinks' ``stats()``;
        ``draw`` is the overlay for frames the view draws itself (with the runtime's status line)."""
        self.metrics.identity = dict(identity or {})
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
