"""Video outputs of the annotated overlay: an OpenCV window and a recorded file.

Both are ``stream.runtime.FrameOutput``s: they receive the image the runtime drew once per frame.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from stream.types import FrameResult

log = logging.getLogger(__name__)


def display_available() -> bool:
    """True when OpenCV was built with a GUI backend and a display server is reachable."""
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if not gui or gui[0].split(":", 1)[1].strip().upper() == "NONE":
        return False
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Window:
    """Shows each annotated frame; 'q' or Esc in the window asks the run to stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)

    def write(self, image: np.ndarray, result: FrameResult) -> bool:
        cv2.imshow(self.name, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.name)


class Recorder:
    """Writes the annotated frames to a video file (MPEG-4 Part 2 via OpenCV: plays everywhere).

    ``fps`` is the source's own rate, so the recording plays at the speed it was captured. The writer
    opens on the first frame (the frame size is only known then); a size change mid-run is resized
    into the first size so the file stays valid.
    """

    def __init__(self, path: Path, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"Recorder: fps must be positive, found {fps}")
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        parent = self.path.parent
        if not parent.is_dir():
            raise OSError(f"cannot record to {self.path}: folder {parent} does not exist")

    def write(self, image: np.ndarray, result: FrameResult) -> bool:
        h, w = image.shape[:2]
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot record to {self.path}: OpenCV could not open a writer")
            self._size = (w, h)
        if (w, h) != self._size:
            image = cv2.resize(image, self._size)
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            log.info("recorded %d frames to %s", self.frames, self.path)
