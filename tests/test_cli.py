"""The command line as a user meets it: bad input ends with one clear line and a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from stream.config import load_config
from stream.stages import onnx_model
from stream.synthetic.products import DEMO_PRODUCTS, render_packshot

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, check=False, text=True, timeout=timeout
    )


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


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    """A real catalog built by the CLI with the shipped embedder from rendered packshots."""
    root = tmp_path_factory.mktemp("cat")
    photos = root / "photos"
    for pid in DEMO_PRODUCTS[:3]:
        (photos / pid).mkdir(parents=True)
        cv2.imwrite(str(photos / pid / "a.jpg"), render_packshot(pid))
    proc = cli("catalog", "build", str(photos), "-o", str(root / "catalog"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root / "catalog"


def test_catalog_info_and_add(catalog_dir, tmp_path):
    more = tmp_path / "more" / DEMO_PRODUCTS[5]
    more.mkdir(parents=True)
    cv2.imwrite(str(more / "b.jpg"), render_packshot(DEMO_PRODUCTS[5]))
    copy = tmp_path / "catalog"
    shutil.copytree(catalog_dir, copy)
    proc = cli("catalog", "add", str(copy), str(tmp_path / "more"))
    assert proc.returncode == 0, proc.stderr
    assert "4 products" in proc.stdout
    info = cli("catalog", "info", str(copy))
    assert info.returncode == 0 and "checkout-embedder" in info.stdout


def test_catalog_from_another_embedder_is_refused(catalog_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(catalog_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["embedder"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(cli("run", "x.mp4", "--catalog", str(other), "--no-display"), "embedder")


def test_missing_model_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("segment:\n  model:\n    path: /nonexistent/seg.onnx\n")
    assert_one_line_error(cli("run", "x.mp4", "--config", str(cfg), "--no-display"), "/nonexistent/seg.onnx")


def test_model_that_is_not_onnx_is_one_line(tmp_path):
    bad = tmp_path / "seg.onnx"
    bad.write_bytes(b"not a model at all")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"segment:\n  model:\n    path: {bad}\n")
    assert_one_line_error(cli("run", "x.mp4", "--config", str(cfg), "--no-display"), "seg.onnx")


def test_tampered_builtin_model_fails_its_checksum(monkeypatch, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(onnx_model.models_dir(), models)
    with open(models / "segmenter.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00")
    monkeypatch.setattr(onnx_model, "models_dir", lambda: models)
    with pytest.raises(onnx_model.ModelError, match="checksum"):
        onnx_model.load_model(load_config().segment.model)
