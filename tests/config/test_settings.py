"""Strict config: every error names its key; the example file is the defaults."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nvr.base.errors import ConfigError
from nvr.config.settings import Config, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_equals_the_defaults():
    data = tomllib.loads((ROOT / "config.example.toml").read_text())
    cfg = parse_config(data, base=ROOT)
    default = parse_config({}, base=ROOT)
    assert cfg == default


def test_empty_config_has_documented_defaults():
    cfg = parse_config({}, base=Path("/srv"))
    assert cfg.recording.segment_seconds == 10
    assert cfg.data_dir == Path("/srv/nvr-data")
    assert cfg.spool_dir == Path("/srv/nvr-data/spool")
    assert cfg.storage.endpoint == ""
    assert cfg.stall_timeout(parse_config({"cameras": [{"id": "a", "url": "rtsp://h/x"}]}).cameras[0]) == 40


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"server": {"listne": "x"}}, "server.listne", "unknown key"),
        ({"server": {"listen": "localhost"}}, "server.listen", "HOST:PORT"),
        ({"server": {"listen": "1.2.3.4:99999"}}, "server.listen", "out of range"),
        ({"server": 5}, "server", "must be a table"),
        ({"storage": {"object_lock": "yes"}}, "storage.object_lock", "must be a boolean"),
        ({"storage": {"max_connections": True}}, "storage.max_connections", "got a boolean"),
        ({"storage": {"max_connections": 0}}, "storage.max_connections", "between 1 and 256"),
        ({"storage": {"endpoint": "http://minio:9000"}}, "storage.endpoint", "without scheme"),
        ({"storage": {"bucket": "No_Such"}}, "storage.bucket", "bucket name"),
        ({"recording": {"segment_seconds": "10 parsecs"}}, "recording.segment_seconds", "not a duration"),
        ({"recording": {"segment_seconds": 0}}, "recording.segment_seconds", "at least"),
        ({"recording": {"spool_limit": "20 GiBs"}}, "recording.spool_limit", "not a size"),
        ({"recording": {"backoff_initial": 10, "backoff_max": 5}}, "recording.backoff_max", "smaller"),
        ({"retention": {"min_age": "1s"}}, "retention.min_age", "at least"),
        ({"cameras": [{"url": "rtsp://h/x"}]}, "cameras[0].id", "required"),
        ({"cameras": [{"id": "a"}]}, "cameras[0].url", "required"),
        ({"cameras": [{"id": "Bad Id", "url": "rtsp://h/x"}]}, "cameras[0].id", "a-z"),
        ({"cameras": [{"id": "a", "url": "rtsp://h/x", "colour": 1}]}, "cameras[0].colour", "unknown key"),
        ({"cameras": [{"id": "a", "url": "rtsp://h/x", "enabled": 1}]}, "cameras[0].enabled", "boolean"),
        ({"cameras": [{"id": "a", "url": "ftp://h/x"}]}, "cameras[0].url", "scheme"),
        ({"cameras": [{"id": "a", "url": "rtsp:///x"}]}, "cameras[0].url", "no host"),
        ({"cameras": [{"id": "a", "url": "rtsp://h:notaport/x"}]}, "cameras[0].url", "malformed"),
        ({"cameras": [{"id": "a", "url": "rtsp://h/x y"}]}, "cameras[0].url", "spaces"),
        ({"cameras": [{"id": "a", "url": "rtsp://h/x", "rtsp_transport": "quic"}]}, "cameras[0].rtsp_transport", "tcp"),
        (
            {"cameras": [{"id": "a", "url": "rtsp://h/x"}, {"id": "a", "url": "rtsp://h/y"}]},
            "cameras[1].id",
            "duplicate camera id 'a'",
        ),
    ],
)
def test_invalid_config_names_the_key(data, key, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key
    assert fragment in str(err.value)


def test_malformed_url_error_never_prints_the_password():
    with pytest.raises(ConfigError) as err:
        parse_config({"cameras": [{"id": "a", "url": "rtsp://admin:hunter22@cam:notaport/x"}]})
    assert "hunter22" not in str(err.value)


def test_camera_display_url_is_redacted():
    cfg = parse_config({"cameras": [{"id": "a", "url": "rtsp://admin:hunter22@10.0.0.5:554/s?token=abc123"}]})
    cam = cfg.cameras[0]
    assert "hunter22" not in cam.display_url and "abc123" not in cam.display_url
    assert "10.0.0.5:554/s" in cam.display_url


def test_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nlisten = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    f = tmp_path / "nvr.toml"
    f.write_text('[server]\ndata_dir = "data"\n[keys]\ndir = "/abs/keys"\n')
    cfg: Config = load_config(f)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.keyring_dir == Path("/abs/keys")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nwhat = 1\n", "server.what"),
        ("[recording]\nsegment_seconds = true\n", "recording.segment_seconds"),
        ('[[cameras]]\nid = "a"\nurl = "rtsp://h/1"\n[[cameras]]\nid = "a"\nurl = "rtsp://h/2"\n', "cameras[1].id"),
    ],
)
def test_cli_exits_non_zero_naming_the_key(tmp_path, toml, key):
    f = tmp_path / "nvr.toml"
    f.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "nvr.cli", "serve", "--config", str(f), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert key in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything started


@pytest.mark.parametrize(("section", "key", "value"), [
    ("server", "max_clip", float("nan")), ("recording", "connect_timeout", float("inf")),
    ("recording", "segment_seconds", float("nan")), ("retention", "high_watermark", float("nan")),
])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .*(finite|nan|inf)"):
        parse_config({section: {key: value}}, base=tmp_path)
