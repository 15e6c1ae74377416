"""The whole server against real services: an S3 outage, a kill -9 and restart, the demo (`nvr serve --demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.server.backend import open_index
from nvr.server.demo import DEMO_USER
from storage.embedded_s3 import EmbeddedS3
from storage.ledger import verify_chain
from tests.conftest import make_config, minio_client, running, wait_segments
from tests.support import indexdb
from tests.support.checks import assert_contiguous, bucket_keys, cli
from tests.support.wait import until_while_running

pytestmark = pytest.mark.integration


async def test_s3_outage_loses_nothing_and_alarms(rtsp, tmp_path, bucket):
    emb = EmbeddedS3(tmp_path / "own-s3")
    ep = await emb.start()
    try:
        cfg = make_config(tmp_path, ep, bucket, [{"id": "yard", "url": rtsp.url("cam5")}],
                          recording={"spool_limit": "1KiB"})
        async with running(cfg) as srv:
            await wait_segments(srv, "yard", 2, timeout=60)
            await emb.stop(timeout=1)  # an outage, not a maintenance stop
            spool = srv.spool
            await srv.pulse.wait_until(
                lambda: srv.ingest.storage_error is not None and spool.backlog("yard") >= 3, timeout=60)
            await srv.spoolwatch.check()
            alarms = srv.status()["alarms"]
            assert any("spool" in a for a in alarms) and any("S3 unavailable" in a for a in alarms), alarms
            assert srv.recorders.status("yard").state == "recording"  # recording goes on
            await emb.start()
            await srv.pulse.wait_until(
                lambda: srv.ingest.storage_error is None and spool.backlog("yard") == 0, timeout=90)
        index = open_index(cfg)
        rows = index.segments("yard")
        assert len(rows) >= 5
        assert_contiguous(rows)  # nothing lost: no hole where S3 was away
        assert verify_chain("yard", index.ledger_records("yard")) == []
        assert bucket_keys(ep, bucket, "yard/") == sorted(r.object_key for r in rows)
    finally:
        await emb.stop()


async def test_sigkill_mid_run_then_restart_ingests_spool_exactly_once(rtsp, s3, bucket, tmp_path):
    cfg = make_config(tmp_path, s3, bucket, [{"id": "lobby", "url": rtsp.url("cam6")}])
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvr.cli", "serve", "--config", str(tmp_path / "nvr.toml")],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
    )
    try:
        await asyncio.to_thread(
            until_while_running, proc,
            lambda: indexdb.count_segments(cfg, "lobby") >= 3,
            timeout=90, log=log,
        )
    finally:
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(10)
    # ffmpeg died with its parent and left the segment in flight in the spool, without a ticket.
    leftovers = list((cfg.spool_dir / "lobby").glob("*.mp4"))
    assert leftovers, "expected the in-flight segment in the spool"
    async with running(cfg) as srv:
        await srv.pulse.wait_until(lambda: srv.spool.backlog("lobby") == 0 and any(
            r.partial for r in srv.backend.index.segments("lobby")), timeout=60)
        await wait_segments(srv, "lobby", len(srv.backend.index.segments("lobby")) + 2, timeout=60)
    index = open_index(cfg)  # the server closed its own
    rows = index.segments("lobby")
    assert any(r.partial for r in rows)
    assert_contiguous(rows, allow_gaps=True)
    assert len({r.object_key for r in rows}) == len(rows) == len(index.ledger_records("lobby"))
    assert bucket_keys(s3, bucket, "lobby/") == sorted(r.object_key for r in rows)
    versions = list(minio_client(s3).list_objects(bucket, prefix="lobby/", recursive=True, include_version=True))
    assert len(versions) == len(rows)
    assert verify_chain("lobby", index.ledger_records("lobby")) == []
    assert not list(cfg.spool_dir.rglob("*.mp4"))


def _demo_console(stdout: Path) -> tuple[str, str] | None:
    """The console URL and the demo user's password the demo printed, once it has."""
    found = re.search(rf"console: (http://\S+/)  log in as '{DEMO_USER}' with password (\S+) ", stdout.read_text())
    return (found.group(1), found.group(2)) if found else None


def _console_session(base: str, password: str) -> urllib.request.OpenerDirector:
    """A logged-in person's browser, as far as cookies go."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    body = json.dumps({"name": DEMO_USER, "password": password}).encode()
    with opener.open(urllib.request.Request(f"{base}api/v1/login", body, {"Content-Type": "application/json"}), timeout=10) as r:
        assert r.status == 200 and json.load(r)["role"] == "admin"
    return opener


def test_demo_records_within_a_minute_and_fetch_verifies(tmp_path):
    data = tmp_path / "demo"
    stdout = tmp_path / "demo.out"
    server = subprocess.Popen(
        [sys.executable, "-m", "nvr.cli", "serve", "--demo", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        stdout=open(stdout, "wb"), stderr=open(tmp_path / "demo.log", "wb"),
    )
    log = tmp_path / "demo.log"

    def both_cameras() -> list[dict] | None:
        if not (data / "index.sqlite3").exists():
            return None
        listing = cli("segments", "--json", "--data-dir", str(data))
        rows = [json.loads(line) for line in listing.stdout.splitlines()]
        return rows if {r["camera"] for r in rows} >= {"demo-1", "demo-2"} else None

    try:
        rows = until_while_running(server, both_cameras, timeout=60, log=log)
        out = tmp_path / "seg.mp4"
        fetched = cli("fetch", rows[0]["id"], "-o", str(out), "--data-dir", str(data))
        assert fetched.returncode == 0, fetched.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == rows[0]["sha256"]
        # A newcomer opens the console the demo printed, logs in as it said, and finds the camera's minutes and
        # its live stream (the browser side of both is in tests/console).
        base, password = until_while_running(server, lambda: _demo_console(stdout), timeout=10, log=log)
        browser = _console_session(base, password)
        with browser.open(base, timeout=10) as page:
            assert b"console.js" in page.read()
        day = "start=" + ms_to_rfc3339(now_ms() - 600_000) + "&end=" + ms_to_rfc3339(now_ms() + 1000)
        with browser.open(f"{base}api/v1/cameras/demo-1/timeline?{day}", timeout=10) as r:
            assert json.load(r)["recorded"]
        with browser.open(f"{base}api/v1/cameras/demo-1/live.mp4", timeout=20) as r:
            assert r.read(8)[4:8] == b"ftyp"
        assert password not in log.read_text()  # printed for the person, never logged
    finally:
        t0 = time.monotonic()
        server.send_signal(2)
        code = server.wait(60)
        stopped = time.monotonic() - t0
    assert code == 0, (tmp_path / "demo.log").read_text()
    assert stopped < 10, f"Ctrl-C took {stopped:.1f} s"  # ~2.5 s measured; weed's drain (15 s) is skipped
    assert "Traceback" not in (tmp_path / "demo.log").read_text()
    # With the server stopped, fetch starts its own embedded S3 on the same data dir.
    again = cli("fetch", rows[0]["id"], "-o", str(tmp_path / "again.mp4"), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert Path(tmp_path / "again.mp4").read_bytes() == out.read_bytes()


async def test_a_local_user_can_read_nothing_under_the_data_dir(rtsp, tmp_path):
    """After a run with the embedded S3: every dir 0700 and every file 0600 (footage, index, keys, weed's data)."""
    import os
    import stat

    from storage.embedded_s3 import S3Endpoint

    cfg = make_config(tmp_path, S3Endpoint("", "", ""), "footage", [{"id": "door", "url": rtsp.url("cam4")}],
                      storage={"endpoint": "", "access_key": "", "secret_key": ""})
    cfg.data_dir.mkdir(parents=True)
    os.chmod(cfg.data_dir, 0o755)  # as an older release or an operator may have left it
    async with running(cfg) as srv:
        await wait_segments(srv, "door", 2, timeout=90)
        open_to_others = []
        for root, dirs, files in os.walk(cfg.data_dir):
            for name in [*dirs, *files]:
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):  # a segment ingested meanwhile
                    st = path.lstat()
                    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                        open_to_others.append(f"{path.relative_to(cfg.data_dir)} {stat.S_IMODE(st.st_mode):o}")
        assert stat.S_IMODE(cfg.data_dir.stat().st_mode) == 0o700
        # weed chmods its volume files 0644 itself; they sit in 0700 dirs, so no other user reaches them.
        reachable = [p for p in open_to_others if not p.startswith("s3/data/") or not p.endswith("644")]
        assert not reachable, reachable
        for d in (cfg.data_dir / "s3", cfg.data_dir / "s3" / "data"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
