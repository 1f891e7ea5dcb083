"""Outputs: the overlay drawn once per frame keeps items visible and chips apart; recordings keep the
source's own frame rate and, offline, every processed frame (real CLI runs on real video files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.config import load_config
from stream.outputs.overlay import Overlay, place_chip, track_colour
from stream.synthetic.products import DEMO_PRODUCTS, render_packshot
from stream.synthetic.scene import CheckoutScene
from stream.types import Detections, Frame, FrameResult, Label, TrackView

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, check=False, text=True, timeout=timeout
    )


def write_scene_video(path: Path, fps: int, seconds: float) -> int:
    """A rendered checkout scene (items come and go) encoded as H.264 at ``fps``; its frame count."""
    scene = CheckoutScene(seed=3, duration_s=seconds, fps=float(fps))
    n = scene.scene_length_frames
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(scene.render(i).image, format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return n


def recorded(path: Path) -> tuple[int, float]:
    """(frames, nominal fps) of a recording."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate)
        return sum(1 for _ in c.decode(s)), rate


def summary_of(stdout: str) -> dict:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return next(e["summary"] for e in events if e["type"] == "run.summary")


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cat")
    for pid in DEMO_PRODUCTS:
        (root / "photos" / pid).mkdir(parents=True)
        cv2.imwrite(str(root / "photos" / pid / "a.jpg"), render_packshot(pid))
    proc = cli("catalog", "build", str(root / "photos"), "-o", str(root / "catalog"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root / "catalog"


@pytest.mark.slow
@pytest.mark.parametrize("fps", [10, 25])
def test_recording_keeps_the_files_frame_rate_and_every_frame(tmp_path: Path, catalog_dir: Path, fps: int) -> None:
    video = tmp_path / "in.mp4"
    n = write_scene_video(video, fps, seconds=4)
    out = tmp_path / "out.mp4"
    proc = cli("run", str(video), "--catalog", str(catalog_dir), "--record", str(out), "--no-display")
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    frames, rate = recorded(out)
    assert rate == pytest.approx(fps, rel=0.01)
    assert summary["frames_processed"] == summary["frames_output"] == frames == n
    assert summary["results_dropped"] == 0


def _result(boxes: list[tuple[int, int, int, int]]) -> FrameResult:
    h, w = 120, 160
    image = np.full((h, w, 3), 200, np.uint8)
    inst = np.zeros((h // 2, w // 2), np.int32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        inst[y1 // 2 : y2 // 2, x1 // 2 : x2 // 2] = i + 1
    n = len(boxes)
    dets = Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        area=np.ones(n, np.float32),
        centroid=np.zeros((n, 2), np.float32),
        confidence=np.ones(n, np.float32),
        class_id=np.ones(n, np.int32),
        instance_map=inst,
    )
    label = Label("demo-milk", 0.91, 0.2, (("demo-milk", 0.91),), False, 3)
    views = tuple(TrackView(i + 1, tuple(map(float, b)), i, label) for i, b in enumerate(boxes))  # type: ignore[arg-type]
    return FrameResult(Frame(image, 0, 0.0, 0.0, "t"), dets, views, ())


def test_overlay_outlines_and_lightly_tints_the_item() -> None:
    result = _result([(40, 40, 100, 100)])
    image = Overlay(load_config().overlay).draw(result)
    colour = np.array(track_colour(1), np.int32)
    inside = image[70, 70].astype(np.int32)
    assert np.abs(inside - 200).sum() > 0, "item not tinted"
    assert np.abs(inside - colour).sum() > np.abs(np.full(3, 200) - colour).sum() / 3, "tint hides the item"
    edge = image[60:80, 38:43].reshape(-1, 3).astype(np.int32)
    assert (np.abs(edge - colour).sum(axis=1) < 60).any(), "no outline in the track's colour"
    assert result.frame.image.min() == 200, "the frame itself was drawn on"


def test_label_chips_never_cover_each_other() -> None:
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(6):  # six items stacked on one spot: six chips, none over another
        rect = place_chip((70, 16), (50, 50, 90, 90), (320, 240), taken)
        assert all(not (rect[0] < t[2] and t[0] < rect[2] and rect[1] < t[3] and t[1] < rect[3]) for t in taken)
        assert rect[0] >= 0 and rect[2] <= 320 and rect[1] >= 0 and rect[3] <= 240
        taken.append(rect)


def test_empty_frame_draws_only_the_status() -> None:
    result = _result([])
    image = Overlay(load_config().overlay).draw(result, "30.0 fps")
    assert (image[40:, :] == 200).all() and (image[:5, :5] == 0).all()
