"""Config: every default loads; unknown keys, wrong types and out-of-range values name the key."""

from pathlib import Path

import pytest
import yaml

from stream.config import Config, ConfigError, default_path, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_load_and_configs_dir_points_at_them():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert (REPO / "configs" / "default.yaml").read_text() == default_path().read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, None),
        ({"track.min_hits": 5}, None),
        ({"track.nope": 1}, "unknown config key 'track.nope'"),
        ({"nope": 1}, "unknown config key 'nope'"),
        ({"track.min_hits": "three"}, "'track.min_hits': expected int"),
        ({"track.min_hits": 0}, "'track.min_hits': 0 is outside"),
        ({"track.min_hits": True}, "'track.min_hits': expected int"),
        ({"source.transport": "carrier-pigeon"}, "is not one of tcp, udp"),
        ({"track": 3}, "'track': expected a section"),
        ({"events.sinks": "stdout"}, "'events.sinks': expected a list"),
        ({"classify.model.provider": "tpu"}, "'classify.model.provider'"),
    ],
)
def test_overrides(overrides, message):
    if message is None:
        cfg = load_config(overrides=overrides)
        if overrides:
            assert cfg.track.min_hits == 5
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(overrides=overrides)


def test_float_accepts_int_and_user_file_merges(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"track": {"match_iou": 1}, "overlay": {"show_fps": False}}))
    cfg = load_config(f)
    assert cfg.track.match_iou == 1.0 and isinstance(cfg.track.match_iou, float)
    assert cfg.overlay.show_fps is False
    assert cfg.track.min_hits == load_config().track.min_hits


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "expected a mapping"), ("a: [\n", "not valid YAML"), ("bogus: 1\n", "unknown config key")],
)
def test_bad_files(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config("/nonexistent/c.yaml")


def test_every_default_is_commented():
    for line in default_path().read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and ":" in stripped:
            assert "#" in line, f"default without a comment: {line!r}"
