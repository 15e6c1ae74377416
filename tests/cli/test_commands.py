"""Commands that need no S3, run as the ``nvr`` process: their lines and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def nvr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NVR_CONFIG"}
    return subprocess.run([sys.executable, "-m", "nvr.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


def test_check_config_names_the_bad_key_and_exits_2(tmp_path):
    (tmp_path / "nvr.toml").write_text("[server]\nwhat = 1\n")
    proc = nvr("check-config", "--config", "nvr.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("nvr: config error: nvr.toml: server.what: ") and "Traceback" not in proc.stderr
    good = nvr("check-config", "--data-dir", "d", cwd=tmp_path)
    assert good.returncode == 0 and good.stdout.startswith(f"config ok: data dir {tmp_path / 'd'}, ")


def test_verify_bundle_refuses_what_is_no_bundle(tmp_path):
    (tmp_path / "junk.zip").write_text("not a zip\n")
    proc = nvr("verify-bundle", "junk.zip", "--data-dir", "d", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "FAIL layout: junk.zip: not a readable zip file" in proc.stdout
    assert proc.stdout.rstrip().endswith("BUNDLE VERIFICATION FAILED")
    missing = nvr("verify-bundle", "nope.zip", "--data-dir", "d", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.zip: does not exist" in missing.stderr


def test_offline_commands_on_an_empty_data_dir(tmp_path):
    segments = nvr("segments", "--data-dir", "d", cwd=tmp_path)
    assert segments.returncode == 1
    assert segments.stderr == f"nvr: no index at {tmp_path / 'd' / 'index.sqlite3'} (nothing recorded with this data dir yet)\n"
    keys = nvr("keys", "list", "--data-dir", "d", cwd=tmp_path)
    assert keys.returncode == 1 and keys.stderr.startswith("nvr: key error: ")
    bad = nvr("verify", "--camera", "a b", "--start", "x", "--end", "y", "--data-dir", "d", cwd=tmp_path)
    assert bad.returncode == 2 and "--camera: 'a b' is not a camera id" in bad.stderr


def test_tokens_are_created_listed_and_revoked(tmp_path):
    created = nvr("token", "create", "--name", "desk", "--role", "viewer", "--cameras", "gate,door",
                  "--data-dir", "d", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.strip()) > 20 and "shown only this once" in created.stderr
    listed = nvr("token", "list", "--data-dir", "d", cwd=tmp_path)
    assert listed.stdout.split()[:3] == ["desk", "viewer", "door,gate"] and "live" in listed.stdout
    assert nvr("token", "revoke", "desk", "--data-dir", "d", cwd=tmp_path).returncode == 0
    again = nvr("token", "revoke", "desk", "--data-dir", "d", cwd=tmp_path)
    assert again.returncode == 1 and again.stderr == "nvr: no live token named 'desk'\n"
    bad = nvr("token", "create", "--name", "x", "--role", "admin", "--cameras", "a b", "--data-dir", "d", cwd=tmp_path)
    assert bad.returncode == 2 and "--cameras" in bad.stderr


def test_check_config_warns_where_credentials_can_only_go_in_argv(tmp_path):
    (tmp_path / "nvr.toml").write_text('[[cameras]]\nid = "web"\nurl = "http://u:pw@cam/video.mjpg"\n'
                                       '[[cameras]]\nid = "dome"\nurl = "rtsp://u:pw@cam/1"\n')
    proc = nvr("check-config", "--config", str(tmp_path / "nvr.toml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "camera web" in proc.stderr and "hidepid" in proc.stderr  # http: no way but argv
    assert "camera dome" not in proc.stderr  # rtsp: the URL goes to ffmpeg in a private file
    assert "pw" not in proc.stdout
