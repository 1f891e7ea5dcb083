"""The built-in demo: a rendered checkout scene as a camera, and a catalog of its products."""

from __future__ import annotations

import threading
import time

from stream.sources.base import Source, SourceProperties
from stream.synthetic.products import DEMO_PRODUCTS, render_packshot
from stream.synthetic.scene import CheckoutScene
from stream.types import Frame

PACKSHOT_VIEWS = 8  # catalog photos per demo product (pose, size and lighting variations)


class SceneSource(Source):
    """A CheckoutScene read like a camera: paced at the scene's frame rate when ``realtime``."""

    def __init__(
        self, scene: CheckoutScene, *, realtime: bool = True, loop: bool = False, stop: threading.Event | None = None
    ) -> None:
        self.scene = scene
        self.realtime = realtime
        self.loop = loop
        self._stop = stop or threading.Event()  # the run's stop flag: read, never set here
        self._closed = False
        self._n = scene.scene_length_frames
        self._i = 0
        self._t0: float | None = None
        self._properties = SourceProperties(
            name=f"demo:seed={scene.seed}",
            is_live=False,
            realtime=realtime,
            fps=scene.fps,
            width=scene.width,
            height=scene.height,
        )

    @property
    def properties(self) -> SourceProperties:
        return self._properties

    def read(self) -> Frame | None:
        if self._closed or self._stop.is_set() or (self._i >= self._n and not self.loop):
            return None
        if self._t0 is None:
            self._t0 = time.monotonic()
        if self.realtime:
            due = self._t0 + self._i / self.scene.fps
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return None
        rendered = self.scene.render(self._i % self._n)
        frame = Frame(rendered.image, self._i, time.monotonic(), time.time(), self._properties.name)
        self._i += 1
        return frame

    def close(self) -> None:
        self._closed = True


def demo_photos() -> dict[str, list]:
    """A few packshots of every demo product: the photos a retailer would put in the catalog."""
    return {pid: [render_packshot(pid, seed=s) for s in range(PACKSHOT_VIEWS)] for pid in DEMO_PRODUCTS}
