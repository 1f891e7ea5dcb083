"""Config: every default loads; unknown keys, wrong types and out-of-range values name the key."""

import re
from pathlib import Path

import pytest
import yaml

from stream.config import Config, ConfigError, config_schema, default_path, load_config, replace

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
        ({"track.min_hits": "three"}, "'track.min_hits': Input should be a valid integer (found 'three')"),
        ({"track.min_hits": 0}, "'track.min_hits': Input should be greater than or equal to 1 (found 0)"),
        ({"track.min_hits": True}, "'track.min_hits': Input should be a valid integer (found True)"),
        ({"track.match_iou": True}, "'track.match_iou': Input should be a valid number (found True)"),
        ({"source.transport": "carrier-pigeon"}, "Input should be 'tcp' or 'udp'"),
        ({"track": 3}, "'track': expected a section"),
        ({"events.sinks": "stdout"}, "'events.sinks': Input should be a valid tuple"),
        ({"events.sinks": ["stdout", 3]}, "'events.sinks.1': Input should be a valid string"),
        ({"classify.model.provider": "tpu"}, "'classify.model.provider'"),
        ({"classify.crops_per_frame": 4}, "unknown config key 'classify.crops_per_frame'"),  # now crops_per_s
        ({"classify.crops_per_s": 0}, "'classify.crops_per_s': Input should be greater than or equal to 0.1"),
        ({"classify.worker": "gpu"}, "'classify.worker': Input should be 'auto', 'thread' or 'inline'"),
        ({"classify.queue": 0}, "'classify.queue': Input should be greater than or equal to 1"),
        ({"source.max_fps": -1}, "'source.max_fps': Input should be greater than or equal to 0"),
    ],
)
def test_overrides(overrides, message):
    if message is None:
        cfg = load_config(overrides=overrides)
        if overrides:
            assert cfg.track.min_hits == 5
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
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


def test_replace_validates_like_a_file():
    track = load_config().track
    assert replace(track, min_hits=7).min_hits == 7 and track.min_hits != 7
    with pytest.raises(ConfigError, match="'min_hits'"):
        replace(track, min_hits=-1)


def test_json_schema_is_closed_and_covers_every_default():
    schema = config_schema()
    defaults = load_config().model_dump()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(defaults)
    for name, ref in schema["properties"].items():
        section = schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]]
        assert section["additionalProperties"] is False
        assert set(section["properties"]) == set(defaults[name]), name


def test_classify_budget_and_frame_rate_cap_defaults():
    cfg = load_config(overrides={"classify.crops_per_s": 12, "source.max_fps": 15})
    assert cfg.classify.crops_per_s == 12.0 and cfg.source.max_fps == 15.0
    d = load_config()
    assert d.classify.worker == "auto" and d.source.max_fps == 0.0 and d.classify.batch <= d.classify.queue
