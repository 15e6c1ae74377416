"""Faults a recording server meets in the field, injected for real: nothing lost, nothing silent, no fork.

Each test asserts what the issue asks of every fault: 0 segments lost (every
segment in the spool or the index, once), the alarm appears while the fault
lasts and clears after, recording and upload resume by themselves, and the
chain verifies afterwards. S3 faults go through a TCP proxy of our own in front
of the session's SeaweedFS; disk faults use small tmpfs mounts (root only).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from nvr.base.times import ms_to_rfc3339
from nvr.server.app import NvrServer
from nvr.server.backend import open_index
from storage.embedded_s3 import S3Endpoint
from storage.ledger import verify_chain
from tests.conftest import make_config, running, wait_segments
from tests.support import indexdb
from tests.support.checks import assert_contiguous, bucket_keys, cli
from tests.support.s3proxy import S3Proxy

pytestmark = pytest.mark.integration


def via(proxy: S3Proxy, s3: S3Endpoint) -> S3Endpoint:
    return S3Endpoint(proxy.endpoint, s3.access_key, s3.secret_key)


def has_alarm(srv: NvrServer, *words: str) -> bool:
    return any(all(w in a for w in words) for a in srv.status()["alarms"])


async def healthz(srv: NvrServer) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{srv.http_port}/healthz") as r:
        return await r.json()


def assert_nothing_lost(cfg, s3: S3Endpoint, bucket: str, camera: str, *, gaps: bool = False) -> list:
    """Every segment indexed once, in the bucket once, the chain intact, the spool empty."""
    index = open_index(cfg)
    try:
        rows = index.segments(camera)
        assert_contiguous(rows, allow_gaps=gaps)
        assert [r.seq for r in rows] == list(range(len(rows)))
        assert verify_chain(camera, index.ledger_records(camera)) == []
        assert bucket_keys(s3, bucket, f"{camera}/") == sorted(r.object_key for r in rows)
        assert not list((cfg.spool_dir / camera).glob("t*.json")), "tickets left in the spool"
        return rows
    finally:
        index.close()


def actions(cfg) -> list[str]:
    index = open_index(cfg)
    try:
        return [e.action for e in index.audit_entries()]
    finally:
        index.close()


# ---------------------------------------------------------------------- S3 faults


@pytest.mark.parametrize(("mode", "words", "audit"), [
    ("refuse", ("S3 unavailable", "unreachable"), "storage.outage"),
    ("error", ("S3 unavailable", "5xx"), "storage.outage"),
    ("deny", ("S3 denies access",), "storage.outage"),
    ("full", ("S3 is full",), "storage.outage"),
])
async def test_s3_fault_alarms_by_cause_and_clears_with_nothing_lost(rtsp, s3, bucket, tmp_path, mode, words, audit):
    async with S3Proxy(s3.endpoint) as proxy:
        cfg = make_config(tmp_path, via(proxy, s3), bucket, [{"id": "gate", "url": rtsp.url("cam1")}])
        async with running(cfg) as srv:
            await wait_segments(srv, "gate", 2, timeout=60)
            proxy.mode = mode
            proxy.break_connections()
            await srv.pulse.wait_until(lambda: has_alarm(srv, *words) and srv.spool.backlog("gate") >= 2, timeout=60)
            assert (await healthz(srv))["ok"] is False
            assert srv.status()["storage"]["ok"] is False
            assert srv.recorders.status("gate").state == "recording"  # recording goes on into the spool
            proxy.mode = "pass"
            proxy.break_connections()  # the failing answers came on kept-alive connections
            t0 = time.monotonic()
            await srv.pulse.wait_until(lambda: srv.spool.backlog("gate") == 0 and not srv.status()["alarms"],
                                       timeout=60)
            # A probe or the lane's own retry (retry_max is 2 s here) ends the outage, not a long back-off.
            assert time.monotonic() - t0 < 20
            assert (await healthz(srv))["ok"] is True
        seen = actions(cfg)
        assert audit in seen and "storage.restored" in seen
        assert_nothing_lost(cfg, s3, bucket, "gate")


async def test_hung_s3_stop_is_bounded_and_a_start_with_hung_s3_records_and_serves_at_once(rtsp, s3, bucket,
                                                                                            tmp_path):
    async with S3Proxy(s3.endpoint) as proxy:
        cfg = make_config(tmp_path, via(proxy, s3), bucket, [{"id": "dock", "url": rtsp.url("cam2")}])
        async with running(cfg) as srv:
            await wait_segments(srv, "dock", 2, timeout=60)
            proxy.mode = "hang"
            proxy.break_connections()
            await srv.pulse.wait_until(lambda: srv.spool.backlog("dock") >= 1, timeout=30)
            t0 = time.monotonic()
        assert time.monotonic() - t0 <= 30, "stop with S3 hung"

        t0 = time.monotonic()
        async with running(cfg) as srv:
            started = time.monotonic() - t0
            assert started <= 10, f"start took {started:.1f} s with S3 hung"
            body = await healthz(srv)
            assert body["ok"] is False and any("uploads not started" in a for a in body["alarms"]), body
            before = srv.spool.backlog("dock")
            await srv.pulse.wait_until(lambda: srv.spool.backlog("dock") > before, timeout=20)  # it records
            assert time.monotonic() - t0 <= 30
            proxy.mode = "pass"
            proxy.break_connections()
            await srv.pulse.wait_until(lambda: srv.ledger_ready.is_set() and srv.spool.backlog("dock") == 0,
                                       timeout=90)
            assert not srv.status()["alarms"]
        assert_nothing_lost(cfg, s3, bucket, "dock", gaps=True)


async def test_a_killed_embedded_s3_is_restarted_and_the_backlog_uploads(rtsp, tmp_path):
    cfg = make_config(tmp_path, S3Endpoint("", "", ""), "footage", [{"id": "yard", "url": rtsp.url("cam3")}],
                      storage={"endpoint": "", "access_key": "", "secret_key": ""})
    async with running(cfg) as srv:
        await wait_segments(srv, "yard", 2, timeout=90)
        emb = srv.backend.embedded
        old = emb.pid
        os.killpg(old, signal.SIGKILL)
        await srv.pulse.wait_until(lambda: emb.running and emb.pid != old and emb.endpoint is not None, timeout=60)
        have = len(srv.backend.index.segments("yard"))
        await wait_segments(srv, "yard", have + 2, timeout=60)
        await srv.pulse.wait_until(lambda: srv.spool.backlog("yard") == 0 and not srv.status()["alarms"],
                                   timeout=60)
        index = srv.backend.index
        rows = index.segments("yard")
        assert_contiguous(rows, allow_gaps=True)
        assert verify_chain("yard", index.ledger_records("yard")) == []
        assert bucket_keys(emb.endpoint, "footage", "yard/") == sorted(r.object_key for r in rows)
        assert "task.ended" in [e.action for e in index.audit_entries()]  # the weed exit is an audited event


# ---------------------------------------------------------------------- full disks


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                                            str(path)], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")


def _fill(path: Path) -> Path:
    """Fill the file system of ``path`` to the last byte; returns the filler."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096, 1):
            block = b"\0" * chunk
            try:
                while os.write(fd, block):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for p in made:
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


async def test_full_spool_disk_stops_the_camera_loudly_and_it_resumes_when_space_returns(rtsp, s3, bucket, tmp_path,
                                                                                         mounts):
    spool = tmp_path / "spool"
    _mount_tmpfs(spool, "16m")
    mounts.append(spool)
    cfg = make_config(tmp_path, s3, bucket, [{"id": "lane", "url": rtsp.url("cam4")}],
                      recording={"spool_dir": str(spool), "min_free": "0B"})
    async with running(cfg) as srv:
        await wait_segments(srv, "lane", 2, timeout=60)
        filler = await asyncio.to_thread(_fill, spool)
        await srv.pulse.wait_until(lambda: has_alarm(srv, "camera lane"), timeout=60)
        assert (await healthz(srv))["ok"] is False
        filler.unlink()
        have = len(srv.backend.index.segments("lane"))
        await wait_segments(srv, "lane", have + 3, timeout=60)  # resumed, without a restart by hand
        await srv.pulse.wait_until(lambda: not srv.status()["alarms"], timeout=30)
    assert_nothing_lost(cfg, s3, bucket, "lane", gaps=True)


async def test_full_data_dir_alarms_and_ingest_resumes_when_space_returns(rtsp, s3, bucket, tmp_path, mounts):
    if indexdb.current() is not None:
        pytest.skip("the index is in the data dir only on SQLite (PostgreSQL's outage: the next test)")
    data = tmp_path / "data"
    _mount_tmpfs(data, "24m")
    mounts.append(data)
    cfg = make_config(tmp_path, s3, bucket, [{"id": "hall", "url": rtsp.url("cam5")}],
                      recording={"spool_dir": str(tmp_path / "spool")})
    async with running(cfg) as srv:
        await wait_segments(srv, "hall", 2, timeout=60)
        filler = await asyncio.to_thread(_fill, data)
        await srv.pulse.wait_until(lambda: has_alarm(srv, "camera hall", "full"), timeout=60)
        assert srv.recorders.status("hall").state == "recording"  # the spool is elsewhere: recording goes on
        await srv.pulse.wait_until(lambda: srv.spool.backlog("hall") >= 2, timeout=30)
        filler.unlink()
        await srv.pulse.wait_until(lambda: srv.spool.backlog("hall") == 0 and not srv.status()["alarms"],
                                   timeout=60)
    assert_nothing_lost(cfg, s3, bucket, "hall")


async def test_an_unreachable_postgresql_index_alarms_and_ingest_resumes(rtsp, s3, bucket, tmp_path, index_backend,
                                                                        postgres):
    if index_backend != "postgresql":
        pytest.skip("a database server that goes away: PostgreSQL's case")
    cfg = make_config(tmp_path, s3, bucket, [{"id": "hall", "url": rtsp.url("cam5")}])
    async with running(cfg) as srv:
        await wait_segments(srv, "hall", 2, timeout=60)
        await asyncio.to_thread(postgres.pause)  # the index server stops: connections refused
        try:
            await srv.pulse.wait_until(lambda: has_alarm(srv, "camera hall", "index"), timeout=60)
            assert (await healthz(srv))["ok"] is False
            assert srv.recorders.status("hall").state == "recording"  # recording never waits for the index
            await srv.pulse.wait_until(lambda: srv.spool.backlog("hall") >= 2, timeout=30)
        finally:
            await asyncio.to_thread(postgres.resume)
        await srv.pulse.wait_until(lambda: srv.spool.backlog("hall") == 0 and not srv.status()["alarms"],
                                   timeout=60)
    assert_nothing_lost(cfg, s3, bucket, "hall")


# ---------------------------------------------------------------------- a lost index


@pytest.mark.parametrize("loss", ["deleted", "empty", "old copy"])
async def test_a_lost_or_old_index_is_rebuilt_from_the_bucket_and_never_forks_the_chain(rtsp, s3, bucket, tmp_path,
                                                                                        loss):
    if loss == "old copy" and indexdb.current() is not None:
        pytest.skip("an old copy of the index file: SQLite's case (PostgreSQL is restored by its operator's tools)")
    cfg = make_config(tmp_path, s3, bucket, [{"id": "quay", "url": rtsp.url("cam6")}])
    old = tmp_path / "old.sqlite3"
    async with running(cfg) as srv:
        await wait_segments(srv, "quay", 2, timeout=60)
        await srv.checkpoints.write_all()  # the bucket now holds a checkpoint too
        if loss == "old copy":
            await asyncio.to_thread(srv.backend.index.maintenance.backup_to, old)
        await wait_segments(srv, "quay", 5, timeout=60)
    indexdb.lose(cfg.data_dir, empty=loss == "empty")
    if loss == "old copy":
        shutil.copy(old, cfg.index_path)
    async with running(cfg) as srv:
        assert srv.ledger_ready.is_set()
        have = len(srv.backend.index.segments("quay"))
        assert have >= 5  # the rebuilt index knows everything the bucket holds
        await wait_segments(srv, "quay", have + 2, timeout=60)
    assert {"index.behind_bucket", "index.rebuilt"} <= set(actions(cfg))
    rows = assert_nothing_lost(cfg, s3, bucket, "quay", gaps=True)
    start, end = rows[0].start_ms - 1000, rows[-1].end_ms + 1000
    proc = await asyncio.to_thread(cli, "verify", "--camera", "quay", "--start", ms_to_rfc3339(start), "--end",
                                   ms_to_rfc3339(end), "--config", str(tmp_path / "nvr.toml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
