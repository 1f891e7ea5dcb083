"""The command line as a user meets it: bad input ends with one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, check=False,
                          text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_lists_every_command():
    proc = cli("--help")
    assert proc.returncode == 0
    for cmd in ("run", "demo", "catalog", "eval"):
        assert cmd in proc.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("run", "/nonexistent/video.mp4", "--no-display"), ("/nonexistent/video.mp4",)),
        (("run", "ftp://example.invalid/x", "--no-display"), ("ftp",)),
        (("run", "x.mp4", "--catalog", "/nonexistent/catalog"), ("/nonexistent/catalog",)),
        (("run", "x.mp4", "--events", "carrier://pigeon"), ("carrier://pigeon",)),
        (("catalog", "info", "/nonexistent"), ("not a catalog",)),
    ],
)
def test_bad_input_is_one_line(args, needles):
    assert_one_line_error(cli(*args), *needles)


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("track:\n  min_hitz: 3\n")
    assert_one_line_error(cli("run", "x.mp4", "--config", str(bad)), "track.min_hitz")


def test_corrupt_video_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    assert_one_line_error(cli("run", str(bad), "--no-display"), "broken.mp4")
