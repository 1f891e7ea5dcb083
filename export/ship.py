"""Put an exported ONNX model into the package: stream/models/NAME.onnx, its card and checksum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stream.stages.onnx_model import MANIFEST, models_dir, sha256_file


def ship_model(onnx_path: Path, name: str, card: str, dest: Path | None = None) -> Path:
    """Copy ``onnx_path`` to ``dest/NAME.onnx`` (default: stream/models), write ``NAME.md`` (the
    model card, with the checksum appended) and record the sha256 in MODELS.json."""
    dest = dest or models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name}.onnx"
    if Path(onnx_path).resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    digest = sha256_file(target)
    size_kb = target.stat().st_size / 1024
    (dest / f"{name}.md").write_text(
        card.rstrip() + f"\n\n## File\n\n- `{target.name}`: {size_kb:.0f} KiB, sha256 `{digest}`\n"
    )
    manifest_path = dest / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = {"file": target.name, "sha256": digest}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target
