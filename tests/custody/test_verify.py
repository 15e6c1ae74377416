"""Verification (nvr.custody.verify) against real S3: clean ranges, every kind of tampering, retention deletions, the CLI."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nvr.base.times import ms_to_rfc3339
from nvr.custody.checkpoint import checkpoint_key, journal_key, sign_checkpoint
from nvr.custody.verify import VerifyReport, verify_segment
from storage.keyring import SigningKey
from storage.ledger import canonical_json, record_hash, tombstone_record, verify_chain
from tests.custody.conftest import SEG_MS, T0, Custody, flip
from tests.support.rawsql import tampering

pytestmark = pytest.mark.integration


def seg_of(report: VerifyReport, sid: str):
    return report.by_id()[sid]


def problem_checks(report: VerifyReport) -> set[str]:
    return {p.check for p in report.problems}


async def test_untampered_range_verifies_ok_with_gaps_and_checkpoints(custody):
    await custody.record("cam", [0, 1, 2, 3, 5, 6])  # a hole between n=3 and n=5
    before = await custody.verify("cam")
    assert before.verdict == "unanchored" and {s.status for s in before.segments} == {"unanchored"}

    written = await custody.writer.write_all()
    assert [(c.camera, c.seq) for c in written] == [("cam", 5)]
    client = custody.client()
    doc = json.loads(client.get_object(custody.bucket, checkpoint_key("cam", 5)).read())
    assert doc["alg"] == "Ed25519" and doc["body"]["head"] == custody.index.chain_head("cam").hash
    journal = client.get_object(custody.bucket, journal_key("cam", 5)).read().decode().splitlines()
    assert [json.loads(line) for line in journal] == custody.index.ledger_records("cam")
    assert await custody.writer.write_all() == []  # the head did not move: nothing signed

    report = await custody.verify("cam")
    assert report.verdict == "ok", report.to_json()
    assert [s.status for s in report.segments] == ["ok"] * 6 and {s.checkpoint for s in report.segments} == {5}
    assert [(g.start_ms, g.end_ms) for g in report.gaps] == [
        (T0 - 1000, T0), (T0 + 4 * SEG_MS, T0 + 5 * SEG_MS), (T0 + 7 * SEG_MS, T0 + 60_000)]
    one = await verify_segment(custody.store, custody.index, custody.keyring, "cam:2")
    assert [s.id for s in one.segments] == ["cam:2"] and one.verdict == "ok" and one.gaps == ()
    json.dumps(report.to_json())

    # Footage after the last checkpoint is unanchored, not a problem; a range with nothing recorded is one gap.
    await custody.record("cam", [7, 8])
    fresh = await custody.verify("cam", T0 + 7 * SEG_MS, T0 + 9 * SEG_MS)
    assert fresh.verdict == "unanchored" and not fresh.problems, fresh.to_json()
    empty = await custody.verify("cam", T0 - 3_600_000, T0 - 1_800_000)
    assert empty.verdict == "ok" and not empty.segments and len(empty.gaps) == 1, empty.to_json()


# ---------------------------------------------------------------------- tampering


async def t_flipped_byte(p):
    key = p.row("cam:2").object_key
    p.replace_object(key, flip(p.get(key)))


async def t_other_camera_object(p):
    # Another camera's object, metadata and all, put in place of cam:2's.
    src = p.row("other:1").object_key
    p.replace_object(p.row("cam:2").object_key, p.get(src), metadata_from=src)


async def t_other_time_object(p):
    src = p.row("cam:3").object_key
    p.replace_object(p.row("cam:2").object_key, p.get(src), metadata_from=src)


async def t_object_deleted(p):
    row = p.row("cam:2")
    p.client().remove_object(p.bucket, row.object_key, version_id=row.version_id)


async def t_record_edited(p):
    rec = p.index.ledger_records("cam", 2, 2)[0]
    rec["sha256"] = "0" * 64
    with tampering(p.index) as db:  # the attacker rewrites record, its hash and the row's record hash
        db.execute("UPDATE ledger SET record = ?, hash = ? WHERE camera = 'cam' AND seq = 2",
                   (canonical_json(rec).decode(), record_hash(rec)))
        db.execute("UPDATE segments SET sha256 = ?, record_hash = ? WHERE id = 'cam:2'", (rec["sha256"],
                                                                                          record_hash(rec)))


async def t_record_removed(p):
    with tampering(p.index) as db:
        db.execute("DELETE FROM ledger WHERE camera = 'cam' AND seq = 2")


async def t_records_reordered(p):
    with tampering(p.index) as db:
        db.execute("UPDATE ledger SET seq = -1 WHERE camera = 'cam' AND seq = 1")
        db.execute("UPDATE ledger SET seq = 1 WHERE camera = 'cam' AND seq = 2")
        db.execute("UPDATE ledger SET seq = 2 WHERE camera = 'cam' AND seq = -1")


def _forge(p: Custody, seq: int, key: SigningKey) -> None:
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
    with tampering(p.index) as db:
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
    old = p.get(checkpoint_key("cam", 4))
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
async def test_tampering_is_detected_and_named(custody, case):
    await custody.record("cam", range(5))
    await custody.record("other", range(2))
    await custody.writer.write_all()
    clean = await custody.verify("cam")
    assert clean.verdict == "ok", clean.to_json()

    tamper, expect = TAMPER[case]
    await tamper(custody)
    report = await custody.verify("cam")
    assert report.verdict == "failed", report.to_json()
    expect(report)
    assert (await custody.verify("other")).verdict == "ok"  # the other camera is untouched


# ---------------------------------------------------------------------- retention, CLI verify


async def test_retention_deletions_are_reported_and_the_chain_verifies_across_them(custody, capsys):
    await custody.record("cam", range(5))
    await custody.writer.write_all()
    client = custody.client()
    for seq in (1, 2):  # what the retention sweep does
        row = custody.row(f"cam:{seq}")
        client.remove_object(custody.bucket, row.object_key, version_id=row.version_id)
        tomb = tombstone_record(head=custody.index.chain_head("cam"), segment_seq=seq, segment_record_hash=row.record_hash,
                                object_key=row.object_key, rule="max_age", deleted_at=ms_to_rfc3339(T0 + 99_000),
                                node="test")
        custody.index.append_record(tomb)
        with tampering(custody.index) as db:
            db.execute("UPDATE segments SET state = 'deleted' WHERE id = ?", (row.id,))

    report = await custody.verify("cam")
    assert [s.status for s in report.segments] == ["ok", "deleted-by-retention", "deleted-by-retention", "ok", "ok"]
    assert report.verdict == "unanchored"  # the tombstones are newer than the last checkpoint
    await custody.writer.write_all()
    report = await custody.verify("cam")
    assert report.verdict == "ok" and not report.problems, report.to_json()
    deleted = seg_of(report, "cam:1")
    assert (deleted.rule, deleted.deleted_at, deleted.tombstone_seq) == ("max_age", ms_to_rfc3339(T0 + 99_000), 5)
    assert deleted.checkpoint == 4 and deleted.tombstone_checkpoint == 6
    assert verify_chain("cam", custody.index.ledger_records("cam")) == []

    # The same through the CLI, offline against the bucket: exit 0, then 1 once an object vanishes.
    custody.write_config()
    args = ("verify", "--camera", "cam", "--start", ms_to_rfc3339(T0), "--end", ms_to_rfc3339(T0 + 10_000))
    capsys.readouterr()
    assert await asyncio.to_thread(custody.cli, *args, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "ok" and out["summary"]["deleted-by-retention"] == 2
    assert [e.action for e in custody.index.audit_entries(action="verify")] == ["verify"]
    assert custody.index.audit_entries(action="verify")[0].actor.startswith("cli:")

    row = custody.row("cam:3")
    client.remove_object(custody.bucket, row.object_key, version_id=row.version_id)  # behind our back
    assert await asyncio.to_thread(custody.cli, *args) == 1
    captured = capsys.readouterr()
    assert "cam:3" in captured.out and "MISSING" in captured.out and "VERIFICATION FAILED" in captured.err
    assert await asyncio.to_thread(custody.cli, "verify", "--camera", "cam", "--start", "yesterday",
                                   "--end", ms_to_rfc3339(T0)) == 2
