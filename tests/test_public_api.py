"""The public API: every name in ``stream.__all__`` resolves, and the README's embedding example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import stream

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", stream.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(stream, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = stream.nope  # type: ignore[attr-defined]


@pytest.mark.slow
def test_readme_embedding_example_runs(tmp_path: Path) -> None:
    """The README's example, verbatim, on a short real H.264 file written here."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Embed it in a program.*?```python\n(.*?)```", readme, re.S)
    assert block, "README has no embedding example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 20
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(20):
            img = np.full((240, 320, 3), 60, np.uint8)
            img[80:160, 40 + 5 * i : 120 + 5 * i] = (30, 160, 230)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(s.encode(None))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "frames_processed" in proc.stdout


def test_all_matches_the_export_table() -> None:
    assert sorted(stream.__all__) == sorted(stream._EXPORTS)
