"""Persistence of retention state in the index's SQLite: rules, holds, pending deletions, legal holds, runs.

Tables are this stage's own (``retention_*``, created with ``CREATE TABLE IF
NOT EXISTS`` through ``Index.transaction()``); the only foreign table written is
``segments.state`` ('stored' → 'pending_delete' → 'deleted', or back to
'stored' when a hold arrived before the object was deleted), as agreed with
the index.

Rules: every change is a new row of ``retention_rules`` (the highest version is
in force), so the history of rule changes is kept beside the audit log. Whose
word counts, as for cameras (``nvr/recording/registry.py``): the latest change wins. At
start the config file's rules are imported when they differ from the config
rules last imported (a hash is kept); otherwise the stored rules, possibly
changed over the API since, stay in force.

Holds are never deleted: a release sets ``released_ms``/``released_by``/
``release_reason``. Hold ids are ``hold-<n>`` with ``n`` from an AUTOINCREMENT
key, so an id is never reused.

``retention_pending`` carries what the ``segments`` row can't: the rule that
selected a segment (for its tombstone), the run that marked it, and the last
S3 error. A segment is marked pending and gets its pending row in one
transaction, and leaves both in one transaction.

``retention_legal_holds`` lists the object versions on which *this stage* set
an S3 legal hold, so releasing clears exactly those (and a legal hold set by
someone else directly in S3 is never touched).

Methods are synchronous (SQLite); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.errors import Conflict, NotFound
from nvr.config.retention import RuleSet, rules_from_dict, rules_to_dict
from retention.holds import HoldRecord
from storage.index import Index
from storage.ledger import canonical_json

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS retention_rules (
        version INTEGER PRIMARY KEY,     -- 1, 2, 3...; the highest is in force
        rules TEXT NOT NULL,             -- JSON of rules_to_dict
        source TEXT NOT NULL,            -- 'config' or 'api'
        config_hash TEXT,                -- hash of the config-file rules last imported (carried forward)
        changed_ms INTEGER NOT NULL,
        actor TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS retention_holds (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id TEXT NOT NULL,
        cameras TEXT,                    -- JSON array; NULL: every camera
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,                  -- NULL: open-ended
        reason TEXT NOT NULL,
        expires_ms INTEGER,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        released_ms INTEGER,
        released_by TEXT,
        release_reason TEXT,
        expiry_noted INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS retention_pending (
        segment_id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        marked_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS retention_legal_holds (
        segment_id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        object_key TEXT NOT NULL,
        version_id TEXT,
        set_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS retention_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        trigger TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        report TEXT
    )""",
)

# Runs are also audit events; the table keeps the recent ones for status and the API.
KEEP_RUNS = 1000


def rules_hash(rules: RuleSet) -> str:
    """SHA-256 of the canonical JSON form: how a start tells whether the config file's rules changed."""
    return hashlib.sha256(canonical_json(rules_to_dict(rules))).hexdigest()


@dataclass(frozen=True)
class StoredRules:
    """The rules in force, with where they came from."""

    rules: RuleSet
    version: int
    source: str  # 'config' or 'api'
    changed_ms: int
    actor: str
    config_hash: str | None


@dataclass(frozen=True)
class PendingDeletion:
    """A segment marked for deletion, with what its tombstone needs."""

    segment_id: str
    camera: str
    seq: int
    object_key: str
    version_id: str | None
    record_hash: str
    size: int
    start_ms: int
    end_ms: int
    rule: str
    run_id: int
    attempts: int
    error: str | None


@dataclass(frozen=True)
class LegalHoldEntry:
    """An object version on which this stage set an S3 legal hold."""

    segment_id: str
    camera: str
    object_key: str
    version_id: str | None


@dataclass(frozen=True)
class CoveredSegment:
    """A segment (stored or pending) overlapping an active hold."""

    segment_id: str
    camera: str
    object_key: str
    version_id: str | None
    state: str


class HoldNotFound(NotFound, LookupError):
    """No hold has this id."""


class HoldAlreadyReleased(Conflict, ValueError):
    """The hold was released before."""


def _hold(r: tuple) -> HoldRecord:
    n, case_id, cams, start, end, reason, expires, created, by, rel_ms, rel_by, rel_reason = r
    return HoldRecord(f"hold-{n}", case_id, tuple(json.loads(cams)) if cams is not None else None, start, end,
                      reason, expires, created, by, rel_ms, rel_by, rel_reason)


_HOLD_COLUMNS = ("n, case_id, cameras, start_ms, end_ms, reason, expires_ms, created_ms, created_by, "
                 "released_ms, released_by, release_reason")


def hold_number(hold_id: str) -> int | None:
    """``7`` from ``hold-7``; None when ``hold_id`` is not a hold id."""
    prefix, _, n = hold_id.partition("-")
    if prefix != "hold" or not n.isdigit() or len(n) > 15 or n != str(int(n)):
        return None
    return int(n)


class RetentionStore:
    """Retention state in the index database."""

    def __init__(self, index: Index):
        self.index = index
        with index.transaction() as db:
            for stmt in SCHEMA:
                db.execute(stmt)

    # ------------------------------------------------------------------ rules

    def current_rules(self) -> StoredRules | None:
        """The rules in force (the highest version), or None before the first import."""
        with self.index.transaction() as db:
            return _current_rules(db)

    @staticmethod
    def _insert_rules(db: sqlite3.Connection, rules: RuleSet, *, source: str, actor: str, now_ms: int,
                      config_hash: str | None) -> int:
        last = db.execute("SELECT MAX(version) FROM retention_rules").fetchone()[0] or 0
        db.execute(
            "INSERT INTO retention_rules (version, rules, source, config_hash, changed_ms, actor) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (last + 1, json.dumps(rules_to_dict(rules), sort_keys=True), source, config_hash, now_ms, actor))
        return last + 1

    def import_config_rules(self, rules: RuleSet, *, now_ms: int) -> tuple[StoredRules | None, StoredRules]:
        """Make the config file's rules current if they changed since last imported; (old, current)."""
        digest = rules_hash(rules)
        with self.index.transaction() as db:
            old = _current_rules(db)
            if old is not None and old.config_hash == digest:
                return old, old
            version = self._insert_rules(db, rules, source="config", actor="config file", now_ms=now_ms,
                                         config_hash=digest)
        return old, StoredRules(rules, version, "config", now_ms, "config file", digest)

    def put_rules(self, rules: RuleSet, *, actor: str, now_ms: int, source: str = "api"
                  ) -> tuple[StoredRules | None, StoredRules]:
        """Store ``rules`` as a new version; (old, new)."""
        with self.index.transaction() as db:
            old = _current_rules(db)
            chash = old.config_hash if old else None
            version = self._insert_rules(db, rules, source=source, actor=actor, now_ms=now_ms, config_hash=chash)
        return old, StoredRules(rules, version, source, now_ms, actor, chash)

    # ------------------------------------------------------------------ holds

    def holds(self, *, include_released: bool = True) -> list[HoldRecord]:
        """Holds by id order (the order they were placed)."""
        sql = f"SELECT {_HOLD_COLUMNS} FROM retention_holds"
        if not include_released:
            sql += " WHERE released_ms IS NULL"
        return [_hold(r) for r in self.index.query(sql + " ORDER BY n")]

    def hold(self, hold_id: str) -> HoldRecord | None:
        """The hold with this id, or None (also for a string that is not a hold id)."""
        n = hold_number(hold_id)
        if n is None:
            return None
        rows = self.index.query(f"SELECT {_HOLD_COLUMNS} FROM retention_holds WHERE n = ?", (n,))
        return _hold(rows[0]) if rows else None

    def add_hold(self, *, case_id: str, cameras: Iterable[str] | None, start_ms: int, end_ms: int | None,
                 reason: str, expires_ms: int | None, actor: str, now_ms: int) -> HoldRecord:
        """A new hold, committed: it protects from this transaction on."""
        cams = sorted(set(cameras)) if cameras is not None else None
        with self.index.transaction() as db:
            cur = db.execute(
                "INSERT INTO retention_holds (case_id, cameras, start_ms, end_ms, reason, expires_ms, created_ms, "
                "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (case_id, json.dumps(cams) if cams is not None else None, start_ms, end_ms, reason, expires_ms,
                 now_ms, actor))
            n = cur.lastrowid
        return HoldRecord(f"hold-{n}", case_id, tuple(cams) if cams is not None else None, start_ms, end_ms,
                          reason, expires_ms, now_ms, actor)

    def release_hold(self, hold_id: str, *, actor: str, reason: str, now_ms: int) -> HoldRecord:
        """Record the release on the hold's row; :class:`HoldNotFound` or :class:`HoldAlreadyReleased`."""
        n = hold_number(hold_id)
        with self.index.transaction() as db:
            row = db.execute(f"SELECT {_HOLD_COLUMNS} FROM retention_holds WHERE n = ?", (n,)).fetchone() \
                if n is not None else None
            if row is None:
                raise HoldNotFound(f"hold {hold_id!r} does not exist", hold=hold_id)
            if row[9] is not None:
                raise HoldAlreadyReleased(f"hold {hold_id} is already released", hold=hold_id)
            db.execute("UPDATE retention_holds SET released_ms = ?, released_by = ?, release_reason = ? WHERE n = ?",
                       (now_ms, actor, reason, n))
        return _hold(row[:9] + (now_ms, actor, reason))

    def expired_unnoted(self, now_ms: int) -> list[HoldRecord]:
        """Unreleased holds past their expiry whose expiry was not audited yet."""
        rows = self.index.query(
            f"SELECT {_HOLD_COLUMNS} FROM retention_holds WHERE released_ms IS NULL AND expires_ms IS NOT NULL "
            "AND expires_ms <= ? AND expiry_noted = 0 ORDER BY n", (now_ms,))
        return [_hold(r) for r in rows]

    def note_expired(self, hold_id: str) -> None:
        """The hold's expiry has been audited (so it is audited once)."""
        with self.index.transaction() as db:
            db.execute("UPDATE retention_holds SET expiry_noted = 1 WHERE n = ?", (hold_number(hold_id),))

    def covered_segments(self, holds: Iterable[HoldRecord]) -> dict[str, CoveredSegment]:
        """Segments not deleted that overlap any of ``holds`` (strictly, as the policy's ``Hold.overlaps``)."""
        out: dict[str, CoveredSegment] = {}
        for h in holds:
            sql = ("SELECT id, camera, object_key, version_id, state FROM segments "
                   "WHERE state != 'deleted' AND end_ms > ?")
            args: list[Any] = [h.start_ms]
            if h.end_ms is not None:
                sql += " AND start_ms < ?"
                args.append(h.end_ms)
            if h.cameras is not None:
                sql += f" AND camera IN ({', '.join('?' * len(h.cameras))})"
                args += list(h.cameras)
            for sid, cam, key, vid, state in self.index.query(sql, tuple(args)):
                out[sid] = CoveredSegment(sid, cam, key, vid, state)
        return out

    # ------------------------------------------------------------------ legal holds

    def legal_holds(self) -> dict[str, LegalHoldEntry]:
        """Segment id -> the legal hold this stage set on its object."""
        rows = self.index.query("SELECT segment_id, camera, object_key, version_id FROM retention_legal_holds")
        return {r[0]: LegalHoldEntry(*r) for r in rows}

    def add_legal_hold(self, seg: CoveredSegment, now_ms: int) -> None:
        """Note a legal hold set on ``seg``'s object version."""
        with self.index.transaction() as db:
            db.execute("INSERT OR REPLACE INTO retention_legal_holds (segment_id, camera, object_key, version_id, "
                       "set_ms) VALUES (?, ?, ?, ?, ?)",
                       (seg.segment_id, seg.camera, seg.object_key, seg.version_id, now_ms))

    def remove_legal_hold(self, segment_id: str) -> None:
        """Forget the legal hold of ``segment_id`` (cleared in S3, or its object is gone)."""
        with self.index.transaction() as db:
            db.execute("DELETE FROM retention_legal_holds WHERE segment_id = ?", (segment_id,))

    def segment_states(self, ids: Iterable[str]) -> dict[str, str]:
        """Segment id -> state, for the ids the index knows (queried 500 at a time)."""
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.index.query(f"SELECT id, state FROM segments WHERE id IN ({', '.join('?' * len(chunk))})",
                                    tuple(chunk))
            out.update(dict(rows))
        return out

    # ------------------------------------------------------------------ segments for the decision

    def live_segments(self) -> list[tuple[str, str, int, int, int, str, int]]:
        """(id, camera, start_ms, end_ms, object_size, state, ingested_ms) of every segment not deleted."""
        return self.index.query("SELECT id, camera, start_ms, end_ms, object_size, state, ingested_ms "
                                "FROM segments WHERE state != 'deleted'")

    def usage_bytes(self) -> int:
        """Bytes in the bucket per the index: the object size of every segment not deleted."""
        return self.index.query("SELECT COALESCE(SUM(object_size), 0) FROM segments WHERE state != 'deleted'")[0][0]

    # ------------------------------------------------------------------ two-phase deletion

    def mark_pending(self, selected: Iterable[tuple[str, str]], *, run_id: int, now_ms: int) -> list[str]:
        """Sweep step 2, one transaction: stored → pending_delete with the rule; the ids actually marked."""
        marked: list[str] = []
        with self.index.transaction() as db:
            for sid, rule in selected:
                cur = db.execute("UPDATE segments SET state = 'pending_delete' WHERE id = ? AND state = 'stored'",
                                 (sid,))
                if cur.rowcount:
                    db.execute("INSERT OR REPLACE INTO retention_pending (segment_id, rule, run_id, marked_ms) "
                               "VALUES (?, ?, ?, ?)", (sid, rule, run_id, now_ms))
                    marked.append(sid)
        return marked

    def pending(self) -> list[PendingDeletion]:
        """Every segment in state pending_delete (this run's and earlier runs'), by camera and seq."""
        rows = self.index.query(
            "SELECT s.id, s.camera, s.seq, s.object_key, s.version_id, s.record_hash, s.object_size, s.start_ms, "
            "s.end_ms, COALESCE(p.rule, 'retention'), COALESCE(p.run_id, 0), COALESCE(p.attempts, 0), p.error "
            "FROM segments s LEFT JOIN retention_pending p ON p.segment_id = s.id "
            "WHERE s.state = 'pending_delete' ORDER BY s.camera, s.seq")
        return [PendingDeletion(*r) for r in rows]

    def pending_count(self) -> int:
        """How many segments are in state pending_delete."""
        return self.index.query("SELECT COUNT(*) FROM segments WHERE state = 'pending_delete'")[0][0]

    def note_failures(self, errors: Mapping[str, str]) -> None:
        """Count a failed attempt and keep the last S3 error (cut to 500 characters) of each segment."""
        with self.index.transaction() as db:
            for sid, err in errors.items():
                db.execute("UPDATE retention_pending SET attempts = attempts + 1, error = ? WHERE segment_id = ?",
                           (err[:500], sid))

    @staticmethod
    def finish_deleted_in(db: sqlite3.Connection, segment_id: str) -> None:
        """Sweep step 5: pending_delete → deleted, pending row gone; inside the caller's ``Index.transaction()``."""
        db.execute("UPDATE segments SET state = 'deleted' WHERE id = ? AND state = 'pending_delete'", (segment_id,))
        db.execute("DELETE FROM retention_pending WHERE segment_id = ?", (segment_id,))

    def unmark(self, segment_id: str) -> None:
        """A hold arrived before the object was deleted: back to stored."""
        with self.index.transaction() as db:
            db.execute("UPDATE segments SET state = 'stored' WHERE id = ? AND state = 'pending_delete'",
                       (segment_id,))
            db.execute("DELETE FROM retention_pending WHERE segment_id = ?", (segment_id,))

    def tombstone_seq(self, camera: str, segment_seq: int) -> int | None:
        """The ledger seq of an existing tombstone for ``camera``'s segment ``segment_seq`` (resume check)."""
        rows = self.index.query(
            "SELECT seq FROM ledger WHERE camera = ? AND type = 'tombstone' AND seq > ? "
            "AND json_extract(record, '$.segment_seq') = ? LIMIT 1", (camera, segment_seq, segment_seq))
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ runs

    def start_run(self, trigger: str, now_ms: int) -> int:
        """A new run's id; runs older than the last :data:`KEEP_RUNS` are dropped."""
        with self.index.transaction() as db:
            cur = db.execute("INSERT INTO retention_runs (trigger, started_ms) VALUES (?, ?)", (trigger, now_ms))
            run_id = cur.lastrowid
            db.execute("DELETE FROM retention_runs WHERE id <= ?", (run_id - KEEP_RUNS,))
        return run_id

    def finish_run(self, run_id: int, report: Mapping[str, Any], now_ms: int) -> None:
        """Keep the run's report."""
        with self.index.transaction() as db:
            db.execute("UPDATE retention_runs SET finished_ms = ?, report = ? WHERE id = ?",
                       (now_ms, json.dumps(report, sort_keys=True), run_id))


def _current_rules(db: sqlite3.Connection) -> StoredRules | None:
    """The newest stored rules version (inside the caller's transaction)."""
    row = db.execute("SELECT version, rules, source, changed_ms, actor, config_hash FROM retention_rules "
                     "ORDER BY version DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return StoredRules(rules_from_dict(json.loads(row[1])), row[0], row[2], row[3], row[4], row[5])
