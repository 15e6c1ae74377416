"""Recording end to end against real services: GStreamer RTSP cameras, ffmpeg, nvr, SeaweedFS S3."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time

import pytest

from nvr.base.ffmpeg import find_ffmpeg
from nvr.server.backend import open_index
from storage.envelope import MAGIC
from storage.ledger import record_hash, verify_chain
from storage.objectstore import RECORD_META
from tests.conftest import make_config, minio_client, running, wait_segments
from tests.support.checks import assert_contiguous, bucket_keys, cli, free_port

pytestmark = pytest.mark.integration


async def test_two_cameras_record_encrypted_chained_segments(rtsp, s3, bucket, tmp_path):
    cams = [{"id": "front", "url": rtsp.url("cam1")}, {"id": "back", "url": rtsp.url("cam2")}]
    cfg = make_config(tmp_path, s3, bucket, cams)
    async with running(cfg) as srv:
        for cam in ("front", "back"):
            await wait_segments(srv, cam, 12, timeout=120)
        statuses = srv.recorders.statuses()
        assert all(st.restarts == 0 for st in statuses.values()), statuses
    # Shutdown finished the last segments and drained the spool.
    index = open_index(cfg)  # the server closed its own
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
    index = open_index(cfg)  # the server closed its own
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
    index = open_index(cfg)
    assert index.segments("dead") == []
    assert_contiguous(index.segments("alive"))


async def test_a_kill_loses_at_most_the_fragment_being_written(tmp_path):
    """kill -9 of a recording ffmpeg mid-segment: the spool file plays up to the last complete fragment.

    Every fragment (one per keyframe, 1 s here) reaches the file when it is complete; without that
    the mp4 muxer wrote 256 KiB at a time and a kill lost up to a whole segment.
    """
    from nvr.base.ffmpeg import probe_duration
    from nvr.config.settings import CameraConfig
    from nvr.recording.command import record_command
    from tests.support.rtsp import RtspSimulator, make_clip
    from tests.support.wait import until

    # A low-bitrate camera (20 KB/s): 256 KiB writes would come every 13 s, fragments come every 1 s.
    clip = make_clip(tmp_path / "low.h264", width=320, height=240, fps=15, seconds=4, gop=15, bitrate="150k")
    sim = RtspSimulator()
    await asyncio.to_thread(sim.start, mounts=("low",), clip=clip)
    argv = record_command(find_ffmpeg(), CameraConfig(id="k", url=sim.url("low")), tmp_path / "r-%06d.mp4",
                          segment_seconds=60, connect_timeout=5)
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    seg = tmp_path / "r-000000.mp4"
    sizes: list[int] = []

    def grew() -> bool:
        size = seg.stat().st_size if seg.exists() else 0
        if size and (not sizes or size != sizes[-1]):
            sizes.append(size)
        return len(sizes) >= 5  # the header, then at least four fragments, each flushed as it closed

    try:
        await until(lambda: seg.exists(), timeout=20, what="the first segment file")
        born = time.monotonic()
        await until(grew, timeout=20, interval=0.05, what="fragments reaching the spool file")
    finally:
        proc.kill()
        await proc.wait()
        await asyncio.to_thread(sim.stop)
    elapsed = time.monotonic() - born
    duration = await probe_duration(find_ffmpeg(), seg)
    assert duration is not None and elapsed - duration <= 1.5, (elapsed, duration)  # one GOP (1 s) and slack


async def test_camera_credentials_never_reach_ffmpegs_argv(rtsp, s3, bucket, tmp_path):
    """Any local user reads every argv in /proc: the URL's password goes to ffmpeg in a 0600 file instead."""
    import stat
    from pathlib import Path

    url = rtsp.url("cam7").replace("rtsp://", "rtsp://officer:s3cr3t-pw@")
    cfg = make_config(tmp_path, s3, bucket, [{"id": "priv", "url": url}])
    async with running(cfg) as srv:
        await wait_segments(srv, "priv", 2, timeout=60)
        pid = srv.recorders.status("priv").pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv and not any(b"s3cr3t-pw" in a or b"officer" in a for a in argv), argv
        listed = cfg.spool_dir / "priv" / ".input.ffconcat"
        assert stat.S_IMODE(listed.stat().st_mode) == 0o600 and b"s3cr3t-pw" in listed.read_bytes()
        assert "s3cr3t-pw" not in json.dumps(srv.status())
