"""nvr reindex (nvr.custody.reindex): the index rebuilt from the bucket alone, contradictions reported."""

from __future__ import annotations

import asyncio
import json

import pytest

from nvr.base.times import ms_to_rfc3339
from storage.index import Index
from storage.ledger import canonical_json, export_record, tombstone_record
from tests.custody.conftest import T0
from tests.support import indexdb
from tests.support.rawsql import sql_rows, tampering

pytestmark = pytest.mark.integration


def _snapshot(index: Index) -> dict:
    return {
        "ledger": sql_rows(index, "SELECT camera, seq, type, record, hash, prev FROM ledger ORDER BY camera, seq"),
        "segments": sql_rows(index, "SELECT id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, "
                                "object_size, object_sha256, version_id, key_id, record_hash, state FROM segments "
                                "ORDER BY id"),
        "checkpoints": sql_rows(index, "SELECT * FROM checkpoints ORDER BY camera, seq"),
    }


async def test_reindex_rebuilds_the_same_index_from_the_bucket(custody, capsys):
    await custody.record("cam", range(4))
    await custody.record("other", range(2))
    await custody.writer.write_all()
    row = custody.row("cam:1")  # a retention deletion and an export: records that live only in journals
    custody.client().remove_object(custody.bucket, row.object_key)
    custody.index.append_record(tombstone_record(
        head=custody.index.chain_head("cam"), segment_seq=1, segment_record_hash=row.record_hash,
        object_key=row.object_key, rule="max_bytes", deleted_at=ms_to_rfc3339(T0 + 50_000), node="test"))
    with tampering(custody.index) as db:
        db.execute("UPDATE segments SET state = 'deleted' WHERE id = 'cam:1'")
    custody.index.append_record(export_record(
        head=custody.index.chain_head("cam"), export_id="exp-0000000000000001", case_id="C-1",
        manifest_sha256="ab" * 32, start=ms_to_rfc3339(T0), end=ms_to_rfc3339(T0 + 4000), first_seq=0, last_seq=0,
        segments=1, exported_by="token:evidence", exported_at=ms_to_rfc3339(T0 + 60_000), node="test"))
    await custody.writer.write_all()
    await custody.record("cam", [4, 5])  # after the last checkpoint: only in the objects' metadata
    before = _snapshot(custody.index)
    assert len(before["ledger"]) == 10 and len(before["checkpoints"]) == 3

    custody.write_config()
    assert await asyncio.to_thread(custody.cli, "reindex") == 1  # refuses a non-empty index
    assert "--force" in capsys.readouterr().err

    custody.index.close()
    indexdb.lose(custody.tmp / "data")
    capsys.readouterr()
    assert await asyncio.to_thread(custody.cli, "reindex", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["written"] and out["lacked"]["count"] == 10 + 8 + 3  # records, segments, checkpoints
    custody.reopen_index()
    assert _snapshot(custody.index) == before

    # A record edited in the index: --force reports the contradiction, keeps a copy, restores the bucket's truth.
    rec = custody.index.ledger_records("cam", 2, 2)[0]
    rec["size"] = 1
    with tampering(custody.index) as db:
        db.execute("UPDATE ledger SET record = ? WHERE camera = 'cam' AND seq = 2", (canonical_json(rec).decode(),))
    custody.index.close()
    assert await asyncio.to_thread(custody.cli, "reindex", "--force") == 0
    out = capsys.readouterr()
    assert "the index contradicted: 1" in out.out and "ledger record cam:2" in out.out
    if indexdb.current() is None:  # a SQLite index is copied first; PostgreSQL has its operator's backups
        assert list((custody.tmp / "data").glob("index.sqlite3.before-reindex-*"))
    custody.reopen_index()
    assert _snapshot(custody.index) == before
    await custody.writer.write_all()
    assert (await custody.verify("cam")).verdict == "ok"
