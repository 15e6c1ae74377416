"""Chain of custody against real S3 and real media: checkpoints, verification, tampering, exports, reindex.

Segments are real fragmented MP4 (H.264, made once per session with ffmpeg's
lavfi test source) fed through the real ingest pipeline into a SeaweedFS
bucket, so every test runs the same code path as recording, without waiting
for cameras.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nvr.api.auth import create_token
from nvr.api.metrics import HttpMetrics
from nvr.api.routes import build_app
from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.times import ms_to_rfc3339
from nvr.cli.custody import add_parsers
from nvr.cli.custody import run as cli_run
from nvr.config.settings import load_config
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import (
    CheckpointRefused,
    CheckpointWriter,
    checkpoint_key,
    journal_key,
    key_object_key,
    load_public_pem,
    parse_checkpoint,
    trusted_keys,
)
from nvr.custody.exports import ExportService
from nvr.custody.verify import VerifyReport, verify_range, verify_segment
from nvr.ingest.pipeline import Ingestor
from storage.audit import AuditLog
from storage.index import Index, SegmentRow
from storage.keyring import Keyring, SigningKey
from storage.ledger import (
    canonical_json,
    export_record,
    record_hash,
    tombstone_record,
    verify_chain,
)
from storage.objectstore import RECORD_META, ObjectStore
from storage.spool import ClosedSegment, Spool
from tests.conftest import make_config, minio_client

pytestmark = pytest.mark.integration

T0 = 1_764_421_200_000
SEG_MS = 2000


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> list[bytes]:
    """Six real 1-second fragmented MP4 segments (H.264 320x240, 15 fps, keyframe every second)."""
    d = tmp_path_factory.mktemp("media")
    subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15", "-t", "6",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "15", "-f", "segment",
         "-segment_time", "1", "-segment_format", "mp4",
         "-segment_format_options", "movflags=+frag_keyframe+empty_moov+default_base_moof", "-reset_timestamps", "1",
         str(d / "seg%03d.mp4")],
        check=True, timeout=60, capture_output=True)
    segs = [p.read_bytes() for p in sorted(d.glob("seg*.mp4"))]
    assert len(segs) >= 5 and all(s[4:8] == b"ftyp" for s in segs)
    return segs


@dataclass
class Parts:
    tmp: Path
    store: ObjectStore
    index: Index
    keyring: Keyring
    spool: Spool
    ingestor: Ingestor
    writer: CheckpointWriter
    media: list[bytes]
    bucket: str
    s3: object
    events: list

    async def record(self, camera: str, ns) -> list[SegmentRow]:
        """Ingest segment number n of ``camera`` for each n (start T0 + n * 2 s), real MP4 payloads."""
        rows = []
        for n in ns:
            seg = ClosedSegment(camera=camera, file=f"r{T0:013d}-{n:06d}.mp4", run=f"r{T0:013d}", n=n,
                                start_ms=T0 + n * SEG_MS, end_ms=T0 + (n + 1) * SEG_MS, partial=False, closed_ms=T0)
            self.spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
            self.spool.path(seg).write_bytes(self.media[n % len(self.media)])
            self.spool.write_ticket(seg)
            rows.append(await self.ingestor.ingest(seg))
        return rows

    async def verify(self, camera: str, start: int = T0 - 1000, end: int = T0 + 60_000) -> VerifyReport:
        return await verify_range(self.store, self.index, self.keyring, camera, start, end)

    def client(self):
        return minio_client(self.s3)

    def reopen_index(self) -> None:
        self.index.close()
        self.index = Index(self.tmp / "data" / "index.sqlite3")
        self.ingestor.index = self.index
        self.writer.index = self.index


@pytest.fixture
def parts(tmp_path, s3, bucket, media):
    store = ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket)
    store.ensure_bucket()
    # The layout of a data dir, so the CLI can open the same index and keyring.
    index = Index(tmp_path / "data" / "index.sqlite3")
    keyring = Keyring.open(tmp_path / "data" / "keyring")
    spool = Spool(tmp_path / "data" / "spool")
    events: list = []

    async def on_event(action, target, detail):
        events.append((action, target, detail))

    ingestor = Ingestor(store=store, index=index, keyring=keyring, spool=spool, node_id="test")
    writer = CheckpointWriter(store=store, index=index, keyring=keyring, node_id="test", interval=3600,
                              on_event=on_event)
    p = Parts(tmp_path, store, index, keyring, spool, ingestor, writer, media, bucket, s3, events)
    yield p
    p.index.close()
    store.close()


def seg_of(report: VerifyReport, sid: str):
    return report.by_id()[sid]


def problem_checks(report: VerifyReport) -> set[str]:
    return {p.check for p in report.problems}


# ---------------------------------------------------------------------- checkpoints


async def test_untampered_range_verifies_ok_with_gaps_and_checkpoints(parts):
    await parts.record("cam", [0, 1, 2, 3, 5, 6])  # a hole between n=3 and n=5
    before = await parts.verify("cam")
    assert before.verdict == "unanchored" and {s.status for s in before.segments} == {"unanchored"}

    written = await parts.writer.write_all()
    assert [(c.camera, c.seq) for c in written] == [("cam", 5)]
    client = parts.client()
    doc = json.loads(client.get_object(parts.bucket, checkpoint_key("cam", 5)).read())
    assert doc["alg"] == "Ed25519" and doc["body"]["head"] == parts.index.chain_head("cam").hash
    journal = client.get_object(parts.bucket, journal_key("cam", 5)).read().decode().splitlines()
    assert [json.loads(line) for line in journal] == parts.index.ledger_records("cam")
    assert await parts.writer.write_all() == []  # the head did not move: nothing signed

    report = await parts.verify("cam")
    assert report.verdict == "ok", report.to_json()
    assert [s.status for s in report.segments] == ["ok"] * 6 and {s.checkpoint for s in report.segments} == {5}
    assert [(g.start_ms, g.end_ms) for g in report.gaps] == [
        (T0 - 1000, T0), (T0 + 4 * SEG_MS, T0 + 5 * SEG_MS), (T0 + 7 * SEG_MS, T0 + 60_000)]
    one = await verify_segment(parts.store, parts.index, parts.keyring, "cam:2")
    assert [s.id for s in one.segments] == ["cam:2"] and one.verdict == "ok" and one.gaps == ()
    json.dumps(report.to_json())

    # Footage after the last checkpoint is unanchored, not a problem; a range with nothing recorded is one gap.
    await parts.record("cam", [7, 8])
    fresh = await parts.verify("cam", T0 + 7 * SEG_MS, T0 + 9 * SEG_MS)
    assert fresh.verdict == "unanchored" and not fresh.problems, fresh.to_json()
    empty = await parts.verify("cam", T0 - 3_600_000, T0 - 1_800_000)
    assert empty.verdict == "ok" and not empty.segments and len(empty.gaps) == 1, empty.to_json()


async def test_key_rotation_keeps_old_keys_and_checkpoints_verify(parts):
    await parts.record("cam", [0, 1])
    await parts.writer.start()  # publishes the first key
    try:
        await parts.writer.write_all()
        old = parts.keyring.signing_key.key_id
        new = parts.keyring.rotate_signing_key()
        await parts.record("cam", [2, 3])
        await parts.writer.write_all()
    finally:
        await parts.writer.stop()
    client = parts.client()
    published = {o.object_name for o in client.list_objects(parts.bucket, prefix="ledger/keys/")}
    assert published == {key_object_key(old), key_object_key(new)}
    assert set(trusted_keys(parts.keyring)) == {old, new}
    # A third party checks each checkpoint with nothing but the published PEM.
    for seq, kid in ((1, old), (3, new)):
        pub = load_public_pem(client.get_object(parts.bucket, key_object_key(kid)).read())
        cp = parse_checkpoint(client.get_object(parts.bucket, checkpoint_key("cam", seq)).read(), {kid: pub},
                              camera="cam", seq=seq)
        assert cp.key_id == kid
    report = await parts.verify("cam")
    assert report.verdict == "ok" and [s.checkpoint for s in report.segments] == [1, 1, 3, 3]


async def test_writer_signs_on_interval_and_at_stop_and_refuses_an_edited_chain(parts):
    parts.writer.interval = 0.05
    await parts.record("cam", [0])
    await parts.writer.start()
    try:
        await parts.writer.wait_rounds(1, timeout=10)
        assert parts.index.query("SELECT seq FROM checkpoints WHERE camera = 'cam'") == [(0,)]
        await parts.record("cam", [1])
        done = parts.writer.rounds
        await parts.writer.wait_rounds(done + 2, timeout=10)
        assert parts.index.query("SELECT MAX(seq) FROM checkpoints WHERE camera = 'cam'") == [(1,)]
        parts.writer.interval = 3600
        await parts.writer.wait_rounds(parts.writer.rounds + 1, timeout=10)  # now parked for an hour
        await parts.record("cam", [2])
    finally:
        await parts.writer.stop()  # the final checkpoint, at shutdown
    assert parts.index.query("SELECT MAX(seq) FROM checkpoints WHERE camera = 'cam'") == [(2,)]
    assert parts.client().stat_object(parts.bucket, checkpoint_key("cam", 2))

    # A record edited before it was checkpointed: the writer will not attest the chain built on it.
    await parts.record("cam", [3])
    rec = parts.index.ledger_records("cam", 3, 3)[0]
    rec["size"] += 1
    with parts.index.transaction() as db:
        db.execute("UPDATE ledger SET record = ? WHERE camera = 'cam' AND seq = 3", (canonical_json(rec).decode(),))
    await parts.record("cam", [4])
    with pytest.raises(CheckpointRefused):
        await parts.writer.write_now("cam")
    assert parts.events and parts.events[-1][0] == "ledger.checkpoint_refused"


# ---------------------------------------------------------------------- tampering


def _flip(data: bytes, at: int | None = None) -> bytes:
    b = bytearray(data)
    b[len(b) // 2 if at is None else at] ^= 0x01
    return bytes(b)


def _replace_object(p: Parts, key: str, data: bytes, metadata_from: str | None = None) -> None:
    client = p.client()
    meta = client.stat_object(p.bucket, metadata_from or key).metadata[f"x-amz-meta-{RECORD_META}"]
    client.put_object(p.bucket, key, io.BytesIO(data), len(data), metadata={RECORD_META: meta})


def _get(p: Parts, key: str) -> bytes:
    return p.client().get_object(p.bucket, key).read()


def _row(p: Parts, sid: str) -> SegmentRow:
    row = p.index.segment(sid)
    assert row is not None
    return row


async def t_flipped_byte(p):
    key = _row(p, "cam:2").object_key
    _replace_object(p, key, _flip(_get(p, key)))


async def t_other_camera_object(p):
    # Another camera's object, metadata and all, put in place of cam:2's.
    src = _row(p, "other:1").object_key
    _replace_object(p, _row(p, "cam:2").object_key, _get(p, src), metadata_from=src)


async def t_other_time_object(p):
    src = _row(p, "cam:3").object_key
    _replace_object(p, _row(p, "cam:2").object_key, _get(p, src), metadata_from=src)


async def t_object_deleted(p):
    row = _row(p, "cam:2")
    p.client().remove_object(p.bucket, row.object_key, version_id=row.version_id)


async def t_record_edited(p):
    rec = p.index.ledger_records("cam", 2, 2)[0]
    rec["sha256"] = "0" * 64
    with p.index.transaction() as db:  # the attacker rewrites record, its hash and the row's record hash
        db.execute("UPDATE ledger SET record = ?, hash = ? WHERE camera = 'cam' AND seq = 2",
                   (canonical_json(rec).decode(), record_hash(rec)))
        db.execute("UPDATE segments SET sha256 = ?, record_hash = ? WHERE id = 'cam:2'", (rec["sha256"],
                                                                                          record_hash(rec)))


async def t_record_removed(p):
    with p.index.transaction() as db:
        db.execute("DELETE FROM ledger WHERE camera = 'cam' AND seq = 2")


async def t_records_reordered(p):
    with p.index.transaction() as db:
        db.execute("UPDATE ledger SET seq = -1 WHERE camera = 'cam' AND seq = 1")
        db.execute("UPDATE ledger SET seq = 1 WHERE camera = 'cam' AND seq = 2")
        db.execute("UPDATE ledger SET seq = 2 WHERE camera = 'cam' AND seq = -1")


def _forge(p: Parts, seq: int, key: SigningKey) -> None:
    from nvr.custody.checkpoint import sign_checkpoint

    head = p.index.chain_head("cam")
    cp = sign_checkpoint(key, head, node="intruder")
    assert cp.seq == seq
    doc = cp.document()
    p.client().put_object(p.bucket, checkpoint_key("cam", seq), io.BytesIO(doc), len(doc))


async def t_checkpoint_unknown_key(p):
    await p.record("cam", [5, 6])
    _forge(p, 6, SigningKey("20990101T000000Z-0badc0de", Ed25519PrivateKey.generate()))


async def t_checkpoint_bad_signature(p):
    await p.record("cam", [5, 6])
    _forge(p, 6, SigningKey(p.keyring.signing_key.key_id, Ed25519PrivateKey.generate()))


async def t_rollback_index_truncated(p):
    # Hide the last two segments: their records, rows and the index's memory of the checkpoint.
    with p.index.transaction() as db:
        db.execute("DELETE FROM ledger WHERE camera = 'cam' AND seq >= 3")
        db.execute("DELETE FROM segments WHERE camera = 'cam' AND seq >= 3")
        db.execute("DELETE FROM checkpoints WHERE camera = 'cam'")


async def t_rollback_checkpoint_deleted(p):
    await p.record("cam", [5, 6])
    await p.writer.write_all()
    p.client().remove_object(p.bucket, checkpoint_key("cam", 6))


async def t_rollback_checkpoint_replayed(p):
    await p.record("cam", [5, 6])
    await p.writer.write_all()
    old = _get(p, checkpoint_key("cam", 4))
    p.client().put_object(p.bucket, checkpoint_key("cam", 6), io.BytesIO(old), len(old))


def _tampered(sid, *checks):
    def expect(report: VerifyReport) -> None:
        seg = seg_of(report, sid)
        assert seg.status == "tampered", seg
        assert set(checks) <= set(seg.checks), seg.checks
    return expect


def _problem(check, *also):
    def expect(report: VerifyReport) -> None:
        assert check in problem_checks(report), report.problems
        for a in also:
            a(report)
    return expect


def _ok(*sids):
    def expect(report: VerifyReport) -> None:
        for sid in sids:
            assert seg_of(report, sid).status == "ok", seg_of(report, sid)
    return expect


def _all(*fns):
    def expect(report):
        for f in fns:
            f(report)
    return expect


TAMPER = {
    "flipped_byte": (t_flipped_byte, _all(_tampered("cam:2", "object_sha256", "decrypt"), _ok("cam:1", "cam:3"))),
    "other_camera_object": (t_other_camera_object, _tampered("cam:2", "record_metadata", "object_sha256", "decrypt")),
    "other_time_object": (t_other_time_object, _tampered("cam:2", "record_metadata", "decrypt")),
    "object_deleted": (t_object_deleted, lambda r: (seg_of(r, "cam:2").status == "missing")
                       or pytest.fail(str(seg_of(r, "cam:2")))),
    # The edited record is named; its successor, attested by the checkpoint, is not blamed.
    "record_edited": (t_record_edited, _all(_tampered("cam:2", "ledger_record", "record_metadata"),
                                            _ok("cam:1", "cam:3", "cam:4"))),
    "record_removed": (t_record_removed, _problem("ledger_gap", _tampered("cam:2", "ledger_record"),
                                                  _ok("cam:3", "cam:4"))),
    "records_reordered": (t_records_reordered, _all(_tampered("cam:1", "ledger_seq", "ledger_record"),
                                                    _tampered("cam:2", "ledger_seq", "ledger_record"),
                                                    _ok("cam:0", "cam:3", "cam:4"))),
    "checkpoint_unknown_key": (t_checkpoint_unknown_key, _problem("checkpoint_unknown_key")),
    "checkpoint_bad_signature": (t_checkpoint_bad_signature, _problem("checkpoint_signature")),
    "rollback_index_truncated": (t_rollback_index_truncated, _problem("checkpoint_rollback")),
    "rollback_checkpoint_deleted": (t_rollback_checkpoint_deleted, _problem("checkpoint_rollback")),
    "rollback_checkpoint_replayed": (t_rollback_checkpoint_replayed, _problem("checkpoint_rollback")),
}


@pytest.mark.parametrize("case", list(TAMPER))
async def test_tampering_is_detected_and_named(parts, case):
    await parts.record("cam", range(5))
    await parts.record("other", range(2))
    await parts.writer.write_all()
    clean = await parts.verify("cam")
    assert clean.verdict == "ok", clean.to_json()

    tamper, expect = TAMPER[case]
    await tamper(parts)
    report = await parts.verify("cam")
    assert report.verdict == "failed", report.to_json()
    expect(report)
    assert (await parts.verify("other")).verdict == "ok"  # the other camera is untouched


# ---------------------------------------------------------------------- retention, CLI verify


def _cli(parts: Parts, *argv: str) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path)
    common.add_argument("--data-dir", type=Path)
    common.add_argument("--log-level", default="info")
    parser = argparse.ArgumentParser(prog="nvr")
    add_parsers(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args([*argv, "--config", str(parts.tmp / "nvr.toml")])
    return cli_run(load_config(args.config), args)


def _write_config(parts: Parts) -> None:
    make_config(parts.tmp, parts.s3, parts.bucket, [])


async def test_retention_deletions_are_reported_and_the_chain_verifies_across_them(parts, capsys):
    await parts.record("cam", range(5))
    await parts.writer.write_all()
    client = parts.client()
    for seq in (1, 2):  # what the retention sweep does
        row = _row(parts, f"cam:{seq}")
        client.remove_object(parts.bucket, row.object_key, version_id=row.version_id)
        tomb = tombstone_record(head=parts.index.chain_head("cam"), segment_seq=seq, segment_record_hash=row.record_hash,
                                object_key=row.object_key, rule="max_age", deleted_at=ms_to_rfc3339(T0 + 99_000),
                                node="test")
        parts.index.append_record(tomb)
        with parts.index.transaction() as db:
            db.execute("UPDATE segments SET state = 'deleted' WHERE id = ?", (row.id,))

    report = await parts.verify("cam")
    assert [s.status for s in report.segments] == ["ok", "deleted-by-retention", "deleted-by-retention", "ok", "ok"]
    assert report.verdict == "unanchored"  # the tombstones are newer than the last checkpoint
    await parts.writer.write_all()
    report = await parts.verify("cam")
    assert report.verdict == "ok" and not report.problems, report.to_json()
    deleted = seg_of(report, "cam:1")
    assert (deleted.rule, deleted.deleted_at, deleted.tombstone_seq) == ("max_age", ms_to_rfc3339(T0 + 99_000), 5)
    assert deleted.checkpoint == 4 and deleted.tombstone_checkpoint == 6
    assert verify_chain("cam", parts.index.ledger_records("cam")) == []

    # The same through the CLI, offline against the bucket: exit 0, then 1 once an object vanishes.
    _write_config(parts)
    args = ("verify", "--camera", "cam", "--start", ms_to_rfc3339(T0), "--end", ms_to_rfc3339(T0 + 10_000))
    capsys.readouterr()
    assert await asyncio.to_thread(_cli, parts, *args, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "ok" and out["summary"]["deleted-by-retention"] == 2
    assert [e.action for e in parts.index.audit_entries(action="verify")] == ["verify"]
    assert parts.index.audit_entries(action="verify")[0].actor.startswith("cli:")

    row = _row(parts, "cam:3")
    client.remove_object(parts.bucket, row.object_key, version_id=row.version_id)  # behind our back
    assert await asyncio.to_thread(_cli, parts, *args) == 1
    captured = capsys.readouterr()
    assert "cam:3" in captured.out and "MISSING" in captured.out and "VERIFICATION FAILED" in captured.err
    assert await asyncio.to_thread(_cli, parts, "verify", "--camera", "cam", "--start", "yesterday",
                                   "--end", ms_to_rfc3339(T0)) == 2


# ---------------------------------------------------------------------- reindex


def _snapshot(index: Index) -> dict:
    return {
        "ledger": index.query("SELECT camera, seq, type, record, hash, prev FROM ledger ORDER BY camera, seq"),
        "segments": index.query("SELECT id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, "
                                "object_size, object_sha256, version_id, key_id, record_hash, state FROM segments "
                                "ORDER BY id"),
        "checkpoints": index.query("SELECT * FROM checkpoints ORDER BY camera, seq"),
    }


async def test_reindex_rebuilds_the_same_index_from_the_bucket(parts, capsys):
    await parts.record("cam", range(4))
    await parts.record("other", range(2))
    await parts.writer.write_all()
    row = _row(parts, "cam:1")  # a retention deletion and an export: records that live only in journals
    parts.client().remove_object(parts.bucket, row.object_key)
    parts.index.append_record(tombstone_record(
        head=parts.index.chain_head("cam"), segment_seq=1, segment_record_hash=row.record_hash,
        object_key=row.object_key, rule="max_bytes", deleted_at=ms_to_rfc3339(T0 + 50_000), node="test"))
    with parts.index.transaction() as db:
        db.execute("UPDATE segments SET state = 'deleted' WHERE id = 'cam:1'")
    parts.index.append_record(export_record(
        head=parts.index.chain_head("cam"), export_id="exp-0000000000000001", case_id="C-1",
        manifest_sha256="ab" * 32, start=ms_to_rfc3339(T0), end=ms_to_rfc3339(T0 + 4000), first_seq=0, last_seq=0,
        segments=1, exported_by="token:evidence", exported_at=ms_to_rfc3339(T0 + 60_000), node="test"))
    await parts.writer.write_all()
    await parts.record("cam", [4, 5])  # after the last checkpoint: only in the objects' metadata
    before = _snapshot(parts.index)
    assert len(before["ledger"]) == 10 and len(before["checkpoints"]) == 3

    _write_config(parts)
    assert await asyncio.to_thread(_cli, parts, "reindex") == 1  # refuses a non-empty index
    assert "--force" in capsys.readouterr().err

    parts.index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{parts.tmp / 'data' / 'index.sqlite3'}{suffix}").unlink(missing_ok=True)
    capsys.readouterr()
    assert await asyncio.to_thread(_cli, parts, "reindex", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["written"] and out["lacked"]["count"] == 10 + 8 + 3  # records, segments, checkpoints
    parts.reopen_index()
    assert _snapshot(parts.index) == before

    # A record edited in the index: --force reports the contradiction, keeps a copy, restores the bucket's truth.
    rec = parts.index.ledger_records("cam", 2, 2)[0]
    rec["size"] = 1
    with parts.index.transaction() as db:
        db.execute("UPDATE ledger SET record = ? WHERE camera = 'cam' AND seq = 2", (canonical_json(rec).decode(),))
    parts.index.close()
    assert await asyncio.to_thread(_cli, parts, "reindex", "--force") == 0
    out = capsys.readouterr()
    assert "the index contradicted: 1" in out.out and "ledger record cam:2" in out.out
    assert list((parts.tmp / "data").glob("index.sqlite3.before-reindex-*"))
    parts.reopen_index()
    assert _snapshot(parts.index) == before
    await parts.writer.write_all()
    assert (await parts.verify("cam")).verdict == "ok"


# ---------------------------------------------------------------------- export


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def _standard_checks(top: Path) -> list[int]:
    """Exit codes of the VERIFY.txt commands: sha256sum and openssl only, no project code."""
    return [
        _run(["sha256sum", "--strict", "-c", "SHA256SUMS"], top).returncode,
        _run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public.pem", "-rawin", "-in", "SHA256SUMS",
              "-sigfile", "SHA256SUMS.sig"], top).returncode,
        _run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public.pem", "-rawin", "-in", "manifest.json",
              "-sigfile", "manifest.sig"], top).returncode,
    ]


async def test_export_bundle_verifies_with_sha256sum_and_openssl_alone(parts, tmp_path):
    await parts.record("cam", range(4))
    await parts.record("other", range(2))
    audit = AuditLog(parts.index)
    svc = ExportService(store=parts.store, index=parts.index, keyring=parts.keyring, node_id="test", audit=audit,
                        ffmpeg=find_ffmpeg(), directory=tmp_path / "data" / "exports", checkpoints=parts.writer)
    await svc.start()
    try:
        job = await svc.create(cameras=["cam", "other"], start_ms=T0 + 500, end_ms=T0 + 7000, case_id="CASE-42",
                               reason="burglary at the north gate", actor=("token:officer", "evidence"))
        job = await svc.wait(job.id, timeout=90)
    finally:
        await svc.stop()
    assert job.state == "done", job.error
    assert (tmp_path / "data" / "exports").stat().st_mode & 0o777 == 0o700
    bundle = svc.bundle_path(job)
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == job.sha256

    out = tmp_path / "unzipped"
    assert _run(["unzip", "-q", str(bundle), "-d", str(out)], tmp_path).returncode == 0
    top = out / job.id
    assert _standard_checks(top) == [0, 0, 0]
    fp = subprocess.run(f"openssl pkey -pubin -in public.pem -outform DER | sha256sum", shell=True, cwd=top,  # noqa: F541
                        capture_output=True, text=True, check=True).stdout.split()[0]
    manifest = json.loads((top / "manifest.json").read_text())
    assert manifest["signing_key"]["fingerprint_sha256"] == fp
    assert (manifest["case_id"], manifest["reason"], manifest["exported_by"]) == (
        "CASE-42", "burglary at the north gate", "token:officer")
    assert manifest["node"] == "test" and manifest["software"]["name"] == "nvr"
    assert [s["id"] for s in manifest["segments"]] == ["cam:0", "cam:1", "cam:2", "cam:3", "other:0", "other:1"]
    for s in manifest["segments"]:  # the decrypted originals, byte for byte
        assert (top / s["file"]).read_bytes() == parts.media[s["seq"]]
        assert s["checkpoint"] is not None
    assert manifest["gaps"] == [{"camera": "other", "start": ms_to_rfc3339(T0 + 4000), "end": ms_to_rfc3339(T0 + 7000),
                                 "seconds": 3.0}]
    assert {c["camera"] for c in manifest["clips"] if c.get("file")} == {"cam", "other"}
    probe = _run([find_ffmpeg(), "-v", "error", "-i", "clips/cam.mp4", "-f", "null", "-"], top)
    assert probe.returncode == 0, probe.stderr
    assert "sha256sum --strict -c SHA256SUMS" in (top / "VERIFY.txt").read_text()

    assert verify_bundle(bundle).ok and verify_bundle(top).ok
    assert verify_bundle(bundle, trusted=trusted_keys(parts.keyring)).ok

    # The export is in each camera's ledger, naming the manifest, and in the audit log.
    manifest_sha = hashlib.sha256((top / "manifest.json").read_bytes()).hexdigest()
    for camera in ("cam", "other"):
        records = parts.index.ledger_records(camera)
        assert records[-1]["type"] == "export" and records[-1]["manifest_sha256"] == manifest_sha
        assert records[-1]["case_id"] == "CASE-42" and verify_chain(camera, records) == []
    assert [e.action for e in parts.index.audit_entries(target=job.id)] == ["export.create", "export.done"]

    # One changed byte in any file fails a standard tool and verify-bundle.
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        original = path.read_bytes()
        path.write_bytes(_flip(original))
        try:
            codes = _standard_checks(top)
            assert any(codes), f"{path.name}: no standard tool noticed"
            report = verify_bundle(top)
            assert not report.ok, f"{path.name}: verify-bundle noticed nothing"
        finally:
            path.write_bytes(original)
    assert _standard_checks(top) == [0, 0, 0]

    # ... and in the zip itself.
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle) as zf:
        info = zf.getinfo(f"{job.id}/{manifest['segments'][0]['file']}")
    data = bytearray(bundle.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert not verify_bundle(damaged).ok
    _write_config(parts)
    assert await asyncio.to_thread(_cli, parts, "verify-bundle", str(bundle)) == 0
    assert await asyncio.to_thread(_cli, parts, "verify-bundle", str(damaged)) == 1


# ---------------------------------------------------------------------- HTTP handlers


async def test_custody_routes_roles_scope_and_audit(parts, tmp_path):
    await parts.record("cam", range(3))
    await parts.record("other", range(1))
    index = parts.index
    audit = AuditLog(index)
    exports = ExportService(store=parts.store, index=index, keyring=parts.keyring, node_id="test", audit=audit,
                            ffmpeg=None, directory=tmp_path / "exports", checkpoints=parts.writer)
    await exports.start()
    srv = SimpleNamespace(
        backend=SimpleNamespace(store=parts.store, index=index, keyring=parts.keyring, node_id="test"),
        audit=audit, checkpoints=parts.writer, exports=exports, metrics=HttpMetrics(),
        cameras=SimpleNamespace(get=lambda cid: object() if cid in ("cam", "other") else None),
    )
    tokens = {role: create_token(index, name=role, role=role, cameras=None) for role in ("viewer", "evidence")}
    tokens["scoped"] = create_token(index, name="scoped", role="evidence", cameras=["other"])
    server = TestServer(build_app(srv), host="127.0.0.1")
    await server.start_server()
    rng = {"start": ms_to_rfc3339(T0), "end": ms_to_rfc3339(T0 + 6000)}
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            async def call(method, path, who, **kw):
                async with http.request(method, path, headers={"Authorization": f"Bearer {tokens[who]}"}, **kw) as r:
                    return r.status, (await r.json(content_type=None) if r.content_type.endswith("json")
                                      else await r.read())

            status, keys = await call("GET", "/api/v1/keys", "viewer")
            assert status == 200 and [k["key_id"] for k in keys["keys"]] == [parts.keyring.signing_key.key_id]
            assert keys["keys"][0]["current"] and keys["keys"][0]["public_key_pem"].startswith("-----BEGIN PUBLIC")

            assert (await call("POST", "/api/v1/verify", "viewer", json={"camera": "cam", **rng}))[0] == 403
            status, report = await call("POST", "/api/v1/verify", "evidence", json={"camera": "cam", **rng})
            assert status == 200 and report["verdict"] == "ok", report  # the route anchored fresh footage first
            status, one = await call("GET", "/api/v1/segments/cam:1/verify", "evidence")
            assert status == 200 and [s["status"] for s in one["segments"]] == ["ok"]
            assert (await call("POST", "/api/v1/verify", "scoped", json={"camera": "cam", **rng}))[0] == 404
            assert (await call("GET", "/api/v1/segments/cam:1/verify", "scoped"))[0] == 404
            status, bad = await call("POST", "/api/v1/verify", "evidence", json={"camera": "cam", "colour": 1, **rng})
            assert status == 400 and "unknown key 'colour'" in bad["detail"]
            status, big = await call("POST", "/api/v1/verify", "evidence",
                                     json={"camera": "cam", "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"})
            assert status == 413
            assert (await call("POST", "/api/v1/exports", "evidence", json={}))[0] == 400

            status, job = await call("POST", "/api/v1/exports", "evidence", json={
                "cameras": ["cam", "other"], **rng, "case_id": "K-7", "reason": "test"})
            assert status == 201 and job["state"] in ("queued", "running", "done")
            assert (await call("GET", f"/api/v1/exports/{job['id']}", "scoped"))[0] == 404  # not all its cameras
            done = await exports.wait(job["id"], timeout=60)
            assert done.state == "done", done.error
            status, got = await call("GET", f"/api/v1/exports/{job['id']}", "evidence")
            assert got["state"] == "done" and got["bundle_url"].endswith("/bundle")
            status, body = await call("GET", f"/api/v1/exports/{job['id']}/bundle", "evidence")
            assert status == 200 and hashlib.sha256(body).hexdigest() == got["sha256"]
            (tmp_path / "dl.zip").write_bytes(body)
            assert verify_bundle(tmp_path / "dl.zip").ok
            assert (await call("GET", "/api/v1/exports/exp-0000000000000000", "evidence"))[0] == 404
    finally:
        await server.close()
        await exports.stop()
    actions = [(e.action, e.actor) for e in index.audit_entries() if e.action.startswith(("verify", "export"))]
    assert ("verify", "token:evidence") in actions and ("export.download", "token:evidence") in actions
    assert ("export.create", "token:evidence") in actions


def test_sqlite_json1_available():
    # Verification finds segment records by time with json_extract; refuse to run on a SQLite without it.
    assert sqlite3.connect(":memory:").execute("SELECT json_extract('{\"a\": 1}', '$.a')").fetchone() == (1,)


def test_shutil_which_tools():
    for tool in ("sha256sum", "openssl", "unzip"):
        assert shutil.which(tool), f"{tool} is needed by the bundle tests and by VERIFY.txt"
