"""Onboard a station: `checkout-stream station create DIR --empty VIDEO_OR_IMAGES`.

Writes a station profile (stream/stages/station.py): the empty-station reference built from the
given frames, the counting zones, optionally a segmenter fitted to this station (``minutes`` > 0:
``python -m export fit`` on these frames, which needs the ``export`` extra, torch), and a card with
validation figures measured with the product's own stages:

- ``empty_holdout``: the reference is rebuilt from every other empty frame and the remaining frames
  are counted (the truth is 0 items), plain and through the station gate; again with the light
  changed (x0.7 and x1.3 gain, and a left-to-right gradient) to show lighting drift is not an item.
- ``check`` (optional): a labelled clip or image folder with known counts per frame index
  (``--check-counts "3-21:1,25-36:0"``): the share of those frames counted right, plain and gated.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.config import BoxesConfig, SegmentConfig, TrackConfig, replace
from stream.eval.count import parse_select
from stream.stages.boxes import BoxExtractor
from stream.stages.segment import Segmenter
from stream.stages.station import (
    PROFILE,
    GateParams,
    Station,
    build_reference,
    load_station,
    save_station,
)
from stream.stages.track import can_start_track
from stream.stages.zones import Zone, ZoneFilter
from stream.types import Detections, SegMap

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CARD = "card.md"
MODEL = "segmenter.onnx"
FIT_FRAMES = 16  # empty frames kept in the profile for fitting
MAX_FRAMES = 2000  # a station is onboarded from a few seconds of video, not hours
DRIFTS: tuple[tuple[str, float, float], ...] = (
    ("gain x0.7", 0.7, 0.7),
    ("gain x1.3", 1.3, 1.3),
    ("gradient 0.7->1.2", 0.7, 1.2),
)


def read_frames(source: Path, select: Sequence[tuple[int, int]] = ()) -> list[np.ndarray]:
    """The frames of a video, an image, or a folder of images (sorted), filtered by 0-based index
    ranges (``parse_select``)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such video, image or folder: {source}")
    frames: list[np.ndarray] = []
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        frames = [im for p in paths[:MAX_FRAMES] if (im := cv2.imread(str(p), cv2.IMREAD_COLOR)) is not None]
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(source))
        while len(frames) < MAX_FRAMES:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
    else:
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        frames = [] if img is None else [img]
    if not frames:
        raise ValueError(
            f"{source}: no decodable frames (expected a video {', '.join(VIDEO_SUFFIXES)}, "
            f"an image or a folder of images)"
        )
    if select:
        picked = [f for i, f in enumerate(frames) if any(a <= i <= b for a, b in select)]
        if not picked:
            raise ValueError(f"{source}: none of its {len(frames)} frames (0..{len(frames) - 1}) is in --frames")
        frames = picked
    return frames


def parse_counts(text: str) -> dict[int, int]:
    """'3-21:1,25-36:0' -> {frame index: known count}."""
    out: dict[int, int] = {}
    for part in text.split(","):
        rng, sep, n = part.strip().rpartition(":")
        if not sep or not n.strip().isdigit():
            raise ValueError(
                f"--check-counts: expected 'FIRST-LAST:COUNT,...' (e.g. '3-21:1,25-36:0'), found {part.strip()!r}"
            )
        for a, b in parse_select(rng):
            out.update(dict.fromkeys(range(a, b + 1), int(n)))
    return out


Count = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class Stages:
    """The runtime's counting stages: segmenter, boxes, zones, and the tracker's birth rule."""

    segmenter: Segmenter
    boxes: BoxExtractor
    zones: ZoneFilter
    track: TrackConfig


def _counter(stages: Stages, station: Station | None) -> Count:
    """Items in one frame: the detections that could start a track (``can_start_track``)."""

    def count(frame: np.ndarray) -> int:
        segmap: SegMap = stages.segmenter.segment(frame)
        if station is not None:
            segmap = station.apply(frame, segmap)
        det: Detections = stages.zones.apply(stages.boxes.extract(segmap))[0]
        return int(can_start_track(det.confidence, stages.track).sum())

    return count


def _drift(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    ramp = np.linspace(lo, hi, frame.shape[1], dtype=np.float32)[None, :, None]
    return (frame.astype(np.float32) * ramp).clip(0, 255).astype(np.uint8)


def empty_holdout(frames: list[np.ndarray], stages: Stages, params: GateParams) -> dict[str, Any]:
    """Items counted on held-out empty frames (truth 0), plain and gated, under light changes too."""
    if len(frames) < 2:
        return {"n_frames": 0, "note": "one empty frame: nothing to hold out"}
    fit_frames, held = frames[0::2], frames[1::2]
    reference = build_reference(fit_frames, stages.segmenter.input_size)
    station = Station(root=Path("."), reference=reference, params=params)
    plain, gated = _counter(stages, None), _counter(stages, station)
    out: dict[str, Any] = {
        "n_frames": len(held),
        "reference_frames": len(fit_frames),
        "items_per_frame_plain": float(np.mean([plain(f) for f in held])),
        "items_per_frame_station": float(np.mean([gated(f) for f in held])),
    }
    for name, lo, hi in DRIFTS:
        out[f"items_per_frame_station_{name}"] = float(np.mean([gated(_drift(f, lo, hi)) for f in held]))
    return out


def check_counts(
    frames: list[np.ndarray],
    counts: dict[int, int],
    *,
    stages: Stages,
    station: Station,
    progress: bool = True,
) -> dict[str, Any]:
    """The share of frames with a known count that are counted right, without and with the station."""
    missing = [i for i in counts if i >= len(frames)]
    if missing:
        raise ValueError(f"--check-counts names frame {missing[0]}, but the check source has {len(frames)} frames")
    plain, gated = _counter(stages, None), _counter(stages, station)
    right_plain = right_gated = 0
    per_frame = {}
    for i, want in tqdm(sorted(counts.items()), disable=not progress, unit="frame", desc="check"):
        p, g = plain(frames[i]), gated(frames[i])
        right_plain += p == want
        right_gated += g == want
        per_frame[str(i)] = [want, p, g]
    n = len(counts)
    return {
        "n_frames": n,
        "right_plain": right_plain / n,
        "right_station": right_gated / n,
        "per_frame_truth_plain_station": per_frame,
    }


def create_station(
    root: Path,
    empty: Path,
    *,
    segment_cfg: SegmentConfig,
    boxes_cfg: BoxesConfig,
    track_cfg: TrackConfig,
    frames: Sequence[tuple[int, int]] = (),
    zones: Sequence[Zone] = (),
    catalog_photos: Path | None = None,
    minutes: float = 0.0,
    check: Path | None = None,
    check_counts_text: str | None = None,
    params: GateParams | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build and write the profile in ``root``; returns its station.json content."""
    if minutes < 0:
        raise ValueError(f"--minutes: expected >= 0 (0 = no fitted model), found {minutes}")
    if check is not None and not check_counts_text:
        raise ValueError("--check needs --check-counts 'FIRST-LAST:COUNT,...' (the known counts per frame)")
    counts = parse_counts(check_counts_text) if check_counts_text else {}
    params = params or GateParams()
    empty_frames = read_frames(empty, frames)
    root.mkdir(parents=True, exist_ok=True)
    model_name = None
    if minutes > 0:
        model_name = _fit(root, empty_frames, catalog_photos, minutes, progress)
        segment_cfg = replace(
            segment_cfg, model=replace(segment_cfg.model, path=str(root / MODEL), verify_checksum=False)
        )
    segmenter = Segmenter(segment_cfg)
    stages = Stages(segmenter, BoxExtractor(boxes_cfg), ZoneFilter(zones), track_cfg)
    reference = build_reference(empty_frames, segmenter.input_size)
    h, w = empty_frames[0].shape[:2]
    info: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "empty_source": str(empty),
        "empty_frames": len(empty_frames),
        "source_size": [w, h],
        "zones": [z.to_json() for z in zones],
        "model": model_name,
        "segmenter": segmenter.identity,
    }
    save_station(root, reference, params, info)
    station = load_station(root)
    validation: dict[str, Any] = {"empty_holdout": empty_holdout(empty_frames, stages, params)}
    if check is not None:
        validation["check"] = {
            "source": str(check),
            **check_counts(
                read_frames(check),
                counts,
                stages=stages,
                station=station,
                progress=progress,
            ),
        }
    info["validation"] = validation
    save_station(root, reference, params, info)
    (root / CARD).write_text(card(load_station(root).info))
    return load_station(root).info


def _fit(root: Path, frames: list[np.ndarray], catalog: Path | None, minutes: float, progress: bool) -> str:
    """``python -m export fit`` on (up to FIT_FRAMES of) the empty frames, in its own process: the
    runtime package never imports torch."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("export") is None:
        raise RuntimeError(
            "station create --minutes needs the export extra (torch): pip install -e '.[export]', "
            "or use --minutes 0 (reference only)"
        )
    folder = root / "empty"
    folder.mkdir(exist_ok=True)
    for i in np.linspace(0, len(frames) - 1, min(FIT_FRAMES, len(frames))).astype(int).tolist():
        cv2.imwrite(str(folder / f"{i:05d}.png"), frames[i])
    cmd = [
        sys.executable,
        "-m",
        "export",
        "fit",
        "--background",
        str(folder),
        "--out",
        str(root / MODEL),
        "--minutes",
        str(minutes),
        "--no-int8",
    ]
    if catalog is not None:
        cmd += ["--catalog-photos", str(catalog)]
    log.info("fitting the segmenter to this station for %.1f min: %s", minutes, " ".join(cmd))
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0 or not (root / MODEL).is_file():
        raise RuntimeError(f"python -m export fit failed (exit {done.returncode}); its messages are above")
    shutil.move(str((root / MODEL).with_suffix(".json")), str(root / "fit.json"))
    return MODEL


def card(info: dict[str, Any]) -> str:
    """The station card: what the profile holds and the validation figures."""
    v = info.get("validation", {})
    lines = [
        f"# Station {Path(info.get('empty_source', '?')).stem}",
        "",
        f"- created {info.get('created')}, format `{info.get('format')}`",
        f"- empty-station reference: {info.get('empty_frames')} frames of `{info.get('empty_source')}` "
        f"({info['source_size'][0]}x{info['source_size'][1]}), kept at {info['reference_size'][0]}x"
        f"{info['reference_size'][1]}",
        f"- gate: {json.dumps(info.get('gate'))}",
        f"- segmenter: {info.get('model') or 'the configured one'} "
        f"({info['segmenter'].get('name')} v{info['segmenter'].get('version')})",
        f"- zones: {', '.join(z['name'] for z in info.get('zones', [])) or 'the whole frame'}",
        "",
        "## Validation",
        "",
    ]
    e = v.get("empty_holdout", {})
    if e.get("n_frames"):
        lines += [
            f"Held-out empty frames ({e['n_frames']}, reference from the other {e['reference_frames']}; "
            "truth 0 items):",
            "",
            "| condition | items / frame, plain | items / frame, station |",
            "|---|---|---|",
            f"| as recorded | {e['items_per_frame_plain']:.2f} | {e['items_per_frame_station']:.2f} |",
        ]
        lines += [f"| {name} | | {e[f'items_per_frame_station_{name}']:.2f} |" for name, _, _ in DRIFTS]
        lines.append("")
    c = v.get("check")
    if c:
        lines += [
            f"Known counts on `{c['source']}` ({c['n_frames']} frames): counted right in "
            f"{c['right_plain'] * 100:.1f}% of frames plain, **{c['right_station'] * 100:.1f}%** with "
            "the station.",
            "",
        ]
    return "\n".join(lines)


def station_info(root: Path) -> str:
    """A short human summary of a station folder (its card, else its json)."""
    st = load_station(root)
    path = Path(root) / CARD
    return path.read_text() if path.is_file() else json.dumps(st.info, indent=2)


__all__ = ["PROFILE", "create_station", "parse_counts", "read_frames", "station_info"]
