"""Reading a segment back: a flipped byte in the bucket is a clear integrity error, in code and in ``nvr fetch``."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from storage.envelope import SegmentContext, encrypt
from storage.errors import IntegrityError
from storage.objectstore import RECORD_META
from storage.retrieve import open_segment
from storage.spool import ClosedSegment, Spool
from tests.conftest import minio_client
from tests.support import indexdb, tomlw

pytestmark = pytest.mark.integration

T0 = 1_764_421_200_000


def spool_segment(spool: Spool, camera: str, n: int, payload: bytes | None = None) -> ClosedSegment:
    seg = ClosedSegment(camera=camera, file=f"r{T0:013d}-{n:06d}.mp4", run=f"r{T0:013d}", n=n,
                        start_ms=T0 + n * 2000, end_ms=T0 + (n + 1) * 2000, partial=False, closed_ms=T0)
    spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
    spool.path(seg).write_bytes(payload if payload is not None else bytes(3000) + bytes([n]))
    spool.write_ticket(seg)
    return seg


async def test_flipped_byte_in_object_fails_with_a_clear_error(storage_parts, tmp_path, s3, bucket):
    ing = storage_parts.ingestor()
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
        "index": indexdb.config_table(),
    }))
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "nvr.cli", "fetch", row.id, "-o", str(out), "--config", str(cfg_file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "VERIFICATION FAILED (object_sha256)" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def _replace_object(client, bucket, row, blob: bytes) -> None:
    st = client.stat_object(bucket, row.object_key)
    client.put_object(bucket, row.object_key, io.BytesIO(blob), len(blob),
                      metadata={RECORD_META: st.metadata[f"x-amz-meta-{RECORD_META}"]})


async def test_other_footage_sealed_with_the_kek_fails_on_the_plaintext_hash(storage_parts, s3, bucket):
    """The object's own hash is not computed when decryption succeeds: footage sealed anew under the KEK
    (same length, other bytes) authenticates, and is refused by the ledger's plaintext SHA-256."""
    ing = storage_parts.ingestor()
    row = await ing.ingest(spool_segment(ing.spool, "cam", 0))
    [record] = ing.index.ledger_records(row.camera, row.seq, row.seq)
    ctx = SegmentContext(camera=row.camera, object_key=row.object_key, start=record["start"], end=record["end"])
    forged = encrypt(b"\x01" * row.size, ctx, row.key_id, ing.keyring.kek(row.key_id))
    _replace_object(minio_client(s3), bucket, row, forged)
    with pytest.raises(IntegrityError) as err:
        await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, row)
    assert err.value.check == "sha256"


@pytest.mark.parametrize("change", ["key id", "truncated", "longer"])
async def test_a_changed_object_still_fails_as_not_the_recorded_object(storage_parts, s3, bucket, change):
    """Whichever check notices first (header, key, tag, length), a changed object is reported as object_sha256."""
    ing = storage_parts.ingestor()
    row = await ing.ingest(spool_segment(ing.spool, "cam", 0))
    client = minio_client(s3)
    blob = bytearray(client.get_object(bucket, row.object_key).read())
    if change == "key id":
        blob[6] ^= 0x01  # another KEK's name: unknown to the keyring
    elif change == "truncated":
        del blob[-100:]
    else:
        blob += b"\0" * 64
    _replace_object(client, bucket, row, bytes(blob))
    with pytest.raises(IntegrityError) as err:
        await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, row)
    assert err.value.check == "object_sha256"
