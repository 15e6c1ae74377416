"""End to end against real services: GStreamer RTSP cameras → ffmpeg → nvr → SeaweedFS S3."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nvr.base.ffmpeg import find_ffmpeg
from storage.embedded_s3 import EmbeddedS3
from storage.envelope import MAGIC
from storage.index import Index
from storage.ledger import record_hash, verify_chain
from storage.objectstore import RECORD_META
from tests.conftest import make_config, minio_client, running, wait_segments
from tests.support.wait import until_while_running

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvr.cli", *args], capture_output=True, text=True, timeout=timeout)


def assert_contiguous(rows, *, allow_gaps: bool = False) -> None:
    """Segments of a camera never overlap; without restarts they touch exactly."""
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.start_ms >= a.end_ms, f"{b.id} starts before {a.id} ends"
        if not allow_gaps:
            assert b.start_ms == a.end_ms, f"hole between {a.id} and {b.id}"


def bucket_keys(ep, bucket: str, prefix: str) -> list[str]:
    return sorted(o.object_name for o in minio_client(ep).list_objects(bucket, prefix=prefix, recursive=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_two_cameras_record_encrypted_chained_segments(rtsp, s3, bucket, tmp_path):
    cams = [{"id": "front", "url": rtsp.url("cam1")}, {"id": "back", "url": rtsp.url("cam2")}]
    cfg = make_config(tmp_path, s3, bucket, cams)
    async with running(cfg) as srv:
        for cam in ("front", "back"):
            await wait_segments(srv, cam, 12, timeout=120)
        statuses = srv.recorders.statuses()
        assert all(st.restarts == 0 for st in statuses.values()), statuses
    # Shutdown finished the last segments and drained the spool.
    index = Index(cfg.index_path)  # the server closed its own
    assert not list(cfg.spool_dir.rglob("*.mp4"))
    for cam in ("front", "back"):
        rows = index.segments(cam)
        assert len(rows) >= 12
        assert_contiguous(rows)
        # The first waits for the stream's first keyframe; the last was cut short by the shutdown.
        for r in rows[1:-1]:
            assert 1800 <= r.duration_ms <= 2300, r
        assert [r.seq for r in rows] == list(range(len(rows)))
        records = index.ledger_records(cam)
        assert verify_chain(cam, records) == []
        assert bucket_keys(s3, bucket, f"{cam}/") == sorted(r.object_key for r in rows)
        client = minio_client(s3)
        for r, rec in list(zip(rows, records, strict=True))[:4]:
            resp = client.get_object(bucket, r.object_key)
            blob = resp.read()
            resp.close()
            meta = json.loads(client.stat_object(bucket, r.object_key).metadata[f"x-amz-meta-{RECORD_META}"])
            assert record_hash(meta) == r.record_hash == record_hash(rec)
            assert blob.startswith(MAGIC)
            assert hashlib.sha256(blob).hexdigest() == r.object_sha256
            for marker in (b"ftyp", b"moof", b"avc1", b"\x00\x00\x00\x01\x67", b"\x00\x00\x01\x65"):
                assert marker not in blob, f"plaintext marker {marker!r} in stored object {r.object_key}"

    # `nvr fetch` decrypts, checks the ledger's SHA-256 and gives back a playable MP4.
    row = index.segments("back")[3]
    out = tmp_path / "fetched.mp4"
    proc = await asyncio.to_thread(cli, "fetch", row.id, "-o", str(out), "--config", str(tmp_path / "nvr.toml"))
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert hashlib.sha256(data).hexdigest() == row.sha256
    assert b"ftyp" in data[:64] and b"moof" in data
    play = subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True, timeout=60)
    assert play.returncode == 0, play.stderr
    assert [e.action for e in index.audit_entries(action="segment.fetch")] == ["segment.fetch"]


async def test_camera_drop_restarts_ffmpeg_and_records_a_gap(rtsp, s3, bucket, tmp_path):
    cfg = make_config(tmp_path, s3, bucket, [{"id": "gate", "url": rtsp.url("cam3")}])
    async with running(cfg) as srv:
        await wait_segments(srv, "gate", 3, timeout=60)
        status = srv.recorders.status("gate")
        await asyncio.to_thread(rtsp.drop, "cam3")
        await srv.pulse.wait_until(lambda: status.restarts >= 1, timeout=60)
        before = len(srv.backend.index.segments("gate"))
        await asyncio.to_thread(rtsp.restore, "cam3")
        await wait_segments(srv, "gate", before + 3, timeout=90)
    index = Index(cfg.index_path)  # the server closed its own
    rows = index.segments("gate")
    assert_contiguous(rows, allow_gaps=True)
    holes = [b.start_ms - a.end_ms for a, b in zip(rows, rows[1:], strict=False) if b.start_ms - a.end_ms > 100]
    assert holes, "the outage left no gap between runs"
    gaps = index.audit_entries(action="recording.gap")
    assert gaps and all(g.target == "gate" for g in gaps)
    assert verify_chain("gate", index.ledger_records("gate")) == []


async def test_unreachable_camera_backs_off_without_disturbing_others(rtsp, s3, bucket, tmp_path, caplog):
    dead_url = f"rtsp://admin:topsecret77@127.0.0.1:{free_port()}/nothing"
    cams = [{"id": "dead", "url": dead_url}, {"id": "alive", "url": rtsp.url("cam4")}]
    cfg = make_config(tmp_path, s3, bucket, cams)
    async with running(cfg) as srv:
        dead = srv.recorders.status("dead")
        await srv.pulse.wait_until(lambda: dead.restarts >= 3, timeout=60)
        await wait_segments(srv, "alive", 4, timeout=60)
        assert dead.last_error and "refused" in dead.last_error.lower()
        assert dead.segments == 0 and dead.last_exit_code not in (None, 0)
        http_status = srv.status()
        alive = srv.recorders.status("alive")
        assert alive.restarts == 0 and alive.state == "recording"
    dumped = json.dumps(http_status) + caplog.text
    assert "topsecret77" not in dumped and "admin" not in json.dumps(http_status)
    index = Index(cfg.index_path)
    assert index.segments("dead") == []
    assert_contiguous(index.segments("alive"))


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
        index = Index(cfg.index_path)
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
            lambda: cfg.index_path.exists() and len(Index(cfg.index_path).segments("lobby")) >= 3,
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
    index = Index(cfg.index_path)  # the server closed its own
    rows = index.segments("lobby")
    assert any(r.partial for r in rows)
    assert_contiguous(rows, allow_gaps=True)
    assert len({r.object_key for r in rows}) == len(rows) == len(index.ledger_records("lobby"))
    assert bucket_keys(s3, bucket, "lobby/") == sorted(r.object_key for r in rows)
    versions = list(minio_client(s3).list_objects(bucket, prefix="lobby/", recursive=True, include_version=True))
    assert len(versions) == len(rows)
    assert verify_chain("lobby", index.ledger_records("lobby")) == []
    assert not list(cfg.spool_dir.rglob("*.mp4"))


def test_demo_records_within_a_minute_and_fetch_verifies(tmp_path):
    data = tmp_path / "demo"
    server = subprocess.Popen(
        [sys.executable, "-m", "nvr.cli", "serve", "--demo", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "demo.log", "wb"),
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
    finally:
        server.send_signal(2)
        code = server.wait(60)
    assert code == 0, (tmp_path / "demo.log").read_text()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()
    # With the server stopped, fetch starts its own embedded S3 on the same data dir.
    again = cli("fetch", rows[0]["id"], "-o", str(tmp_path / "again.mp4"), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert Path(tmp_path / "again.mp4").read_bytes() == out.read_bytes()
