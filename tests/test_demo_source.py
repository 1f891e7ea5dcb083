"""The demo's scene source: reads like a camera, ends on its own, and closing it never stops the run."""

from __future__ import annotations

import threading
import time

from stream.sources.demo import SceneSource, demo_photos
from stream.synthetic.products import DEMO_PRODUCTS
from stream.synthetic.scene import CheckoutScene


def test_reads_every_frame_then_ends():
    scene = CheckoutScene(seed=1, duration_s=0.5)
    src = SceneSource(scene, realtime=False)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.index for f in frames] == list(range(scene.scene_length_frames))
    assert all(f.size == (640, 480) and f.source == "demo:seed=1" for f in frames)


def test_close_does_not_set_the_shared_stop_flag():
    stop = threading.Event()
    src = SceneSource(CheckoutScene(seed=1, duration_s=0.5), realtime=False, stop=stop)
    src.close()
    assert src.read() is None and not stop.is_set()


def test_realtime_paces_and_loop_repeats():
    scene = CheckoutScene(seed=1, duration_s=0.2, fps=30)
    src = SceneSource(scene, realtime=True, loop=True)
    t0 = time.monotonic()
    frames = [src.read() for _ in range(2 * scene.scene_length_frames)]
    assert time.monotonic() - t0 >= (len(frames) - 1) / 30 * 0.9
    assert frames[-1] is not None and frames[-1].index == len(frames) - 1


def test_demo_photos_cover_every_product():
    photos = demo_photos()
    assert set(photos) == set(DEMO_PRODUCTS) and all(len(v) >= 2 for v in photos.values())
