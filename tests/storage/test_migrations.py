"""Migrations: an index of the first release upgrades in place; a second open applies nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.index import SCHEMA_VERSION, Index
from storage.ledger import segment_record
from tests.support.rawsql import sql_rows

RELEASE1 = Path(__file__).parent / "data" / "release1-index.sql"
T = 1_764_547_200_000


def _release1_index(tmp_path: Path) -> Path:
    path = tmp_path / "index.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE1.read_text())
    return path


def test_a_release1_index_upgrades_in_place(tmp_path):
    path = _release1_index(tmp_path)
    index = Index(path)
    try:
        assert index.schema_version() == SCHEMA_VERSION
        # Every table's rows are where they were.
        assert [r.id for r in index.segments("gate")] == ["gate:0", "gate:1", "gate:2", "gate:3"]
        assert index.segment("gate:0").state == "deleted"
        assert index.chain_head("gate").seq == 4 and index.chain_head("yard").seq == 3
        assert index.tokens()[0][:3] == ("wall", "viewer", ["gate"])
        assert [c[0] for c in index.cameras()] == ["gate"]
        assert [e.action for e in index.audit_entries()] == ["hold.place"]
        assert index.retention.current_rules()[0] == 1
        assert [h[1] for h in index.retention.holds()] == ["CASE-1"]
        assert index.exports.get("exp-1").state == "queued"
        assert index.checkpoints.latest_seq("yard") == 3
        assert index.skeletons([index.segment("gate:0")]) == {"gate:0": b"skel"}
        # What was read with json_extract is now in columns, filled from the records.
        assert index.tombstone_seq("gate", 0) == 4
        assert sorted(index.segment_record_seqs("yard", T + 2000, T + 6000)) == [1, 2]
        # The trigger is gone (the code keeps the longest segment) and the version lives in its table.
        assert sql_rows(index, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
        assert sql_rows(index, "SELECT value FROM meta WHERE key = 'max_segment_ms'") == [("2000",)]
        assert sql_rows(index, "SELECT value FROM meta WHERE key = 'schema_version'") == []
        # The upgraded chain takes the next record.
        rec = segment_record(head=index.chain_head("yard"), start="2025-12-01T00:00:08Z", end="2025-12-01T00:00:13Z",
                             partial=False, size=1, sha256="d" * 64, object_key="segments/yard/new", object_size=1,
                             object_sha256="e" * 64, key_id="k", node="new")
        assert index.insert_segment(rec, version_id=None).seq == 4
        assert sql_rows(index, "SELECT value FROM meta WHERE key = 'max_segment_ms'") == [("5000",)]
    finally:
        index.close()
    again = Index(path)
    try:
        assert sql_rows(again, "SELECT version FROM schema_version ORDER BY version") == \
            [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        again.close()


def test_a_fresh_index_has_every_migration_once(tmp_path):
    index = Index(tmp_path / "index.sqlite3")
    try:
        names = sql_rows(index, "SELECT version, name FROM schema_version ORDER BY version")
        assert [v for v, _ in names] == list(range(1, SCHEMA_VERSION + 1)) and all(n for _, n in names)
    finally:
        index.close()
