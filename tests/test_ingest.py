"""The ingest pipeline against real S3: crash at each step, re-run, exactly one object/row/record; tampering."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import pytest

from nvr.ingest.pipeline import Ingestor
from storage.errors import IntegrityError, StorageError
from storage.index import Index
from storage.keyring import Keyring
from storage.ledger import verify_chain
from storage.objectstore import RECORD_META, ObjectStore
from storage.retrieve import open_segment
from storage.spool import ClosedSegment, Spool
from tests.conftest import minio_client
from tests.support import tomlw

pytestmark = pytest.mark.integration

T0 = 1_764_421_200_000


class Crash(Exception):
    """Stands for the process dying at this point."""


@pytest.fixture
def parts(tmp_path, s3, bucket):
    store = ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket)
    store.ensure_bucket()
    # The layout of a data dir, so the CLI can open the same index and keyring.
    index = Index(tmp_path / "data" / "index.sqlite3")
    keyring = Keyring.open(tmp_path / "data" / "keyring")
    spool = Spool(tmp_path / "data" / "spool")
    ingestor = Ingestor(store=store, index=index, keyring=keyring, spool=spool, node_id="test")
    yield ingestor
    index.close()
    store.close()


def spool_segment(spool: Spool, camera: str, n: int, payload: bytes | None = None) -> ClosedSegment:
    seg = ClosedSegment(camera=camera, file=f"r{T0:013d}-{n:06d}.mp4", run=f"r{T0:013d}", n=n,
                        start_ms=T0 + n * 2000, end_ms=T0 + (n + 1) * 2000, partial=False, closed_ms=T0)
    spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
    spool.path(seg).write_bytes(payload if payload is not None else os.urandom(3000) + bytes([n]))
    spool.write_ticket(seg)
    return seg


def versions(store: ObjectStore, prefix: str) -> list:
    return list(store.client.list_objects(store.bucket, prefix=prefix, recursive=True, include_version=True))


@pytest.mark.parametrize("crash_at", ["put", "index", "spool_remove"])
async def test_crash_at_any_step_then_rerun_gives_exactly_one_of_each(parts, crash_at, monkeypatch):
    ing: Ingestor = parts
    first = spool_segment(ing.spool, "cam", 0)
    await ing.ingest(first)
    seg = spool_segment(ing.spool, "cam", 1)

    target = {"put": (ing.store, "put"), "index": (ing.index, "insert_segment"),
              "spool_remove": (ing.spool, "remove")}[crash_at]
    real = getattr(*target)

    def crash_after(*a, **kw):
        real(*a, **kw)  # the step completes, then the process "dies"
        raise Crash(crash_at)

    monkeypatch.setattr(*target, crash_after)
    with pytest.raises(Crash):
        await ing.ingest(seg)
    monkeypatch.setattr(*target, real)

    # Restart: the ticket is still in the spool, so the lane re-runs the whole job.
    left = ing.spool.next_ticket("cam")
    if crash_at != "spool_remove":
        assert left == seg
    if left is not None:
        await ing.ingest(left)
    rows = ing.index.segments("cam")
    assert [r.seq for r in rows] == [0, 1]
    assert len(versions(ing.store, "cam/")) == 2
    assert verify_chain("cam", ing.index.ledger_records("cam")) == []
    assert ing.spool.next_ticket("cam") is None and not ing.spool.path(seg).exists()
    plain = await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, rows[1])
    assert hashlib.sha256(plain).hexdigest() == rows[1].sha256


async def test_flipped_byte_in_object_fails_with_a_clear_error(parts, tmp_path, s3, bucket):
    ing: Ingestor = parts
    row = await ing.ingest(spool_segment(ing.spool, "cam", 0))
    client = minio_client(s3)
    st = client.stat_object(bucket, row.object_key)
    blob = bytearray(client.get_object(bucket, row.object_key).read())
    blob[len(blob) // 2] ^= 0x01
    client.put_object(bucket, row.object_key, io.BytesIO(bytes(blob)), len(blob),
                      metadata={RECORD_META: st.metadata[f"x-amz-meta-{RECORD_META}"]})
    with pytest.raises(IntegrityError) as err:
        await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, row)
    assert err.value.check == "object_sha256" and row.id in str(err.value)

    # The same through the CLI: exit code 3 and a message naming the failed check, no traceback.
    cfg_file = tmp_path / "nvr.toml"
    cfg_file.write_text(tomlw.dumps({
        "server": {"data_dir": str(tmp_path / "data")},
        "storage": {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key, "bucket": bucket},
    }))
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "nvr.cli", "fetch", row.id, "-o", str(out), "--config", str(cfg_file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "VERIFICATION FAILED (object_sha256)" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


async def test_put_is_signed_with_the_known_sha256_without_hashing_again(parts, monkeypatch):
    """One PUT request of the caller's buffer; the SDK's own payload hashing is never called."""
    import minio.api

    store = parts.store

    def no_hashing(data=None):
        if data:  # the empty-body hash of the headers-only call is free
            raise AssertionError("the SDK hashed a body whose SHA-256 was given")
        return hashlib.sha256(b"").hexdigest()

    monkeypatch.setattr(minio.api, "sha256_hash", no_hashing)
    monkeypatch.setattr(minio.api, "md5sum_hash", no_hashing)
    body = bytearray(os.urandom(6 * 1024 * 1024))  # above the SDK's 5 MiB multipart threshold
    requests = []
    real_urlopen = store._http.urlopen
    monkeypatch.setattr(store._http, "urlopen", lambda method, url, **kw: requests.append(method) or
                        real_urlopen(method, url, **kw))
    store.guarded(store.put, "k", memoryview(body), record={"seq": 0}, sha256=hashlib.sha256(body).hexdigest())
    assert requests == ["PUT"]  # the server accepted the signature over our hash, in one request
    monkeypatch.undo()
    assert store.get("k") == bytes(body)


async def test_s3_refuses_a_body_that_does_not_match_its_sha256(parts):
    """The hash goes along as x-amz-checksum-sha256, so S3 checks the bytes it received against the ledger's."""
    store = parts.store
    body = os.urandom(100_000)
    damaged = bytearray(body)
    damaged[500] ^= 0x01
    with pytest.raises(StorageError, match="BadDigest"):
        store.guarded(store.put, "k", damaged, record={"seq": 0}, sha256=hashlib.sha256(body).hexdigest())
    assert store.stat("k") is None  # nothing was stored


async def test_head_only_for_tickets_an_earlier_process_or_attempt_wrote(parts, monkeypatch):
    ing: Ingestor = parts
    heads = []
    real_stat = ing.store.stat
    monkeypatch.setattr(ing.store, "stat", lambda key, *a: heads.append(key) or real_stat(key, *a))

    fresh = await ing.ingest(spool_segment(ing.spool, "cam", 0))
    assert heads == []  # written by this process, first attempt: nothing can be in S3 under its key

    left = spool_segment(ing.spool, "cam", 1)
    # The next process: same spool directory, index and bucket, but it did not write this ticket.
    restarted = Ingestor(store=ing.store, index=ing.index, keyring=ing.keyring, spool=Spool(ing.spool.root),
                         node_id="test")
    row = await restarted.ingest(left)
    assert heads == [row.object_key]

    # A retry in the same process HEADs too: the failed attempt's PUT may have landed.
    retry = spool_segment(ing.spool, "cam", 2)
    real_put, puts = ing.store.put, []

    def put_then_fail(*a, **kw):
        puts.append(a[0])
        real_put(*a, **kw)
        raise Crash("connection reset after the body was sent")

    monkeypatch.setattr(ing.store, "put", put_then_fail)
    with pytest.raises(Crash):
        await ing.ingest(retry)
    monkeypatch.setattr(ing.store, "put", lambda *a, **kw: puts.append(a[0]) or real_put(*a, **kw))
    again = await ing.ingest(retry)
    assert heads == [row.object_key, again.object_key]
    assert puts == [again.object_key]  # the landed PUT was found and reused, not repeated
    assert [r.seq for r in ing.index.segments("cam")] == [fresh.seq, row.seq, again.seq] == [0, 1, 2]
