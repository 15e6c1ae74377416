"""The segment index and ledger in SQLite (WAL): what was stored, where, and the chain of records.

Methods are synchronous and thread-safe (one connection behind a lock); async
callers run them with ``asyncio.to_thread``. Every write is one transaction, so
a crash leaves either the whole row set of a segment or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IndexError_
from .ledger import GENESIS, ChainHead, canonical_json, record_hash
from .times import now_ms, parse_rfc3339

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    record TEXT NOT NULL,          -- canonical JSON, exactly the bytes that were hashed
    hash TEXT NOT NULL,
    prev TEXT NOT NULL,
    PRIMARY KEY (camera, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY,            -- "<camera>:<seq>"
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    object_key TEXT NOT NULL UNIQUE,
    object_size INTEGER NOT NULL,
    object_sha256 TEXT NOT NULL,
    version_id TEXT,
    key_id TEXT NOT NULL,
    record_hash TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'stored',
    ingested_ms INTEGER NOT NULL,
    UNIQUE (camera, seq)
);
CREATE INDEX IF NOT EXISTS segments_camera_start ON segments (camera, start_ms);
CREATE INDEX IF NOT EXISTS segments_camera_end ON segments (camera, end_ms);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
"""


@dataclass(frozen=True)
class SegmentRow:
    id: str
    camera: str
    seq: int
    start_ms: int
    end_ms: int
    partial: bool
    size: int
    sha256: str
    object_key: str
    object_size: int
    object_sha256: str
    version_id: str | None
    key_id: str
    record_hash: str
    state: str
    ingested_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


_SEGMENT_COLUMNS = (
    "id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, object_size, "
    "object_sha256, version_id, key_id, record_hash, state, ingested_ms"
)


def _row(r: tuple) -> SegmentRow:
    return SegmentRow(*r[:5], bool(r[5]), *r[6:])  # type: ignore[arg-type]


def segment_id(camera: str, seq: int) -> str:
    return f"{camera}:{seq}"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    prev: str
    hash: str


class Index:
    """SQLite index of segments, ledger records and the audit log."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss, so the spool file is never deleted before its row is durable.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.Error as e:
            raise IndexError_(f"index {path} can't be opened: {e}") from e
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ ledger

    def chain_head(self, camera: str) -> ChainHead:
        rows = self._query("SELECT seq, hash FROM ledger WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,))
        return ChainHead(camera, rows[0][0], rows[0][1]) if rows else ChainHead(camera, -1, GENESIS)

    def ledger_records(self, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT record FROM ledger WHERE camera = ? AND seq >= ?"
        args: tuple = (camera, from_seq)
        if to_seq is not None:
            sql += " AND seq <= ?"
            args += (to_seq,)
        return [json.loads(r[0]) for r in self._query(sql + " ORDER BY seq", args)]

    # ------------------------------------------------------------------ segments

    def insert_segment(self, record: Mapping[str, Any], *, version_id: str | None) -> SegmentRow:
        """Store a segment's ledger record and index row in one transaction; a repeat is a no-op.

        Refuses a record that does not extend the camera's chain head (someone
        else wrote the same seq with different content).
        """
        camera, seq = record["camera"], record["seq"]
        rhash = record_hash(record)
        sid = segment_id(camera, seq)
        with self._tx() as db:
            existing = db.execute("SELECT hash FROM ledger WHERE camera = ? AND seq = ?", (camera, seq)).fetchone()
            if existing:
                if existing[0] != rhash:
                    raise IndexError_(f"{sid}: ledger already holds a different record for this seq")
            else:
                head = db.execute(
                    "SELECT seq, hash FROM ledger WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,)
                ).fetchone()
                want_seq, want_prev = (head[0] + 1, head[1]) if head else (0, GENESIS)
                if seq != want_seq or record["prev"] != want_prev:
                    raise IndexError_(f"{sid}: record does not extend the chain (head seq {want_seq - 1})")
                db.execute(
                    "INSERT INTO ledger (camera, seq, type, record, hash, prev) VALUES (?, ?, ?, ?, ?, ?)",
                    (camera, seq, record["type"], canonical_json(record).decode("utf-8"), rhash, record["prev"]),
                )
                db.execute(
                    f"INSERT INTO segments ({_SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                    (
                        sid, camera, seq, parse_rfc3339(record["start"]), parse_rfc3339(record["end"]),
                        int(record["partial"]), record["size"], record["sha256"], record["object_key"],
                        record["object_size"], record["object_sha256"], version_id, record["key_id"], rhash,
                        "stored", now_ms(),
                    ),
                )
            row = db.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,)).fetchone()
        return _row(row)

    def segment(self, sid: str) -> SegmentRow | None:
        rows = self._query(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,))
        return _row(rows[0]) if rows else None

    def segment_by_object_key(self, object_key: str) -> SegmentRow | None:
        rows = self._query(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE object_key = ?", (object_key,))
        return _row(rows[0]) if rows else None

    def segments(
        self,
        camera: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        limit: int | None = None,
        after_start_ms: int | None = None,
    ) -> list[SegmentRow]:
        """Segments overlapping [start_ms, end_ms), ordered by camera then start time."""
        sql = f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE 1=1"
        args: list[Any] = []
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        if start_ms is not None:
            sql += " AND end_ms > ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        if after_start_ms is not None:
            sql += " AND start_ms > ?"
            args.append(after_start_ms)
        sql += " ORDER BY camera, start_ms"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self._query(sql, tuple(args))]

    def last_end_ms(self, camera: str) -> int | None:
        rows = self._query("SELECT MAX(end_ms) FROM segments WHERE camera = ?", (camera,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def cameras_with_segments(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT camera FROM segments ORDER BY camera")]

    # ------------------------------------------------------------------ audit

    def append_audit(
        self, *, actor: str, role: str, action: str, target: str, detail: Mapping[str, Any], ts_ms: int | None = None
    ) -> AuditEntry:
        """Append one hash-chained audit entry."""
        ts = ts_ms if ts_ms is not None else now_ms()
        with self._tx() as db:
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            new_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            body = {
                "id": new_id, "ts_ms": ts, "actor": actor, "role": role, "action": action,
                "target": target, "detail": dict(detail), "prev": prev,
            }
            h = record_hash(body)
            db.execute(
                "INSERT INTO audit (id, ts_ms, actor, role, action, target, detail, prev, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id, ts, actor, role, action, target, canonical_json(dict(detail)).decode("utf-8"), prev, h),
            )
        return AuditEntry(new_id, ts, actor, role, action, target, dict(detail), prev, h)

    def audit_entries(self, *, action: str | None = None, target: str | None = None) -> list[AuditEntry]:
        sql = "SELECT id, ts_ms, actor, role, action, target, detail, prev, hash FROM audit WHERE 1=1"
        args: list[Any] = []
        if action is not None:
            sql += " AND action = ?"
            args.append(action)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in self._query(sql + " ORDER BY id", tuple(args))
        ]
