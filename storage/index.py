"""The segment index and ledger in SQLite (WAL): what was stored, where, and the chain of records.

Methods are synchronous and thread-safe (one connection behind a lock); async
callers run them with ``asyncio.to_thread``. Every write is one transaction, so
a crash leaves either the whole row set of a segment or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvr.base.ids import segment_id
from nvr.base.times import now_ms, parse_rfc3339
from storage.errors import IndexError_
from storage.ledger import GENESIS, ChainHead, canonical_json, record_hash

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
-- The longest segment ever indexed: a range query can then bound start_ms from below and use the
-- (camera, start_ms) index tightly, instead of scanning a camera's whole history before the range.
CREATE TRIGGER IF NOT EXISTS segments_longest AFTER INSERT ON segments BEGIN
    INSERT INTO meta (key, value) VALUES ('max_segment_ms', CAST(NEW.end_ms - NEW.start_ms AS TEXT))
    ON CONFLICT (key) DO UPDATE
    SET value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT);
END;
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
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    cameras TEXT,                   -- JSON array, NULL: every camera
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
-- What a clip needs to be planned without reading the footage: each segment's boxes minus the media
-- payload (nvr.playback.mp4 skeleton), written at ingest. Optional: a segment without one (ingested by an
-- older release, or rebuilt by reindex) is read whole when a clip is planned.
CREATE TABLE IF NOT EXISTS segment_skeletons (
    id TEXT PRIMARY KEY,            -- the segment's id
    sha256 TEXT NOT NULL,           -- of the plaintext segment the skeleton describes
    skeleton BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cameras (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,           -- JSON of the camera's settings (URL included: the index is private)
    source TEXT NOT NULL,           -- 'config' or 'api'
    config_hash TEXT,               -- hash of the config-file entry last applied, for config cameras
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    deleted_ms INTEGER
);
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


def _select(select: str, filters: list[tuple[str, Any]], *, order: str, limit: int | None) -> tuple[str, tuple]:
    """``select`` with one ``AND`` condition per filter whose value is not None, ordered and limited."""
    sql, args = select + " WHERE 1=1", []
    for condition, value in filters:
        if value is not None:
            sql += f" AND {condition}"
            args.append(value)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, tuple(args)


def _append_ledger(db: sqlite3.Connection, record: Mapping[str, Any], rhash: str) -> None:
    """Insert a record that must extend its camera's chain head (inside the caller's transaction)."""
    camera, seq = record["camera"], record["seq"]
    head = db.execute("SELECT seq, hash FROM ledger WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,)).fetchone()
    want_seq, want_prev = (head[0] + 1, head[1]) if head else (0, GENESIS)
    if seq != want_seq or record["prev"] != want_prev:
        raise IndexError_(f"{camera}:{seq}: record does not extend the chain (head seq {want_seq - 1})")
    db.execute(
        "INSERT INTO ledger (camera, seq, type, record, hash, prev) VALUES (?, ?, ?, ?, ?, ?)",
        (camera, seq, record["type"], canonical_json(record).decode("utf-8"), rhash, record["prev"]),
    )


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
            # An index written before the trigger existed: one scan, once.
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) "
                "SELECT 'max_segment_ms', CAST(COALESCE(MAX(end_ms - start_ms), 0) AS TEXT) FROM segments"
            )
        except sqlite3.Error as e:
            raise IndexError_(f"index {path} can't be opened: {e}") from e
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on the shared connection (for other stages' tables)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of one read statement."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ ledger

    def chain_head(self, camera: str) -> ChainHead:
        rows = self.query("SELECT seq, hash FROM ledger WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,))
        return ChainHead(camera, rows[0][0], rows[0][1]) if rows else ChainHead(camera, -1, GENESIS)

    def ledger_records(self, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT record FROM ledger WHERE camera = ? AND seq >= ?"
        args: tuple = (camera, from_seq)
        if to_seq is not None:
            sql += " AND seq <= ?"
            args += (to_seq,)
        return [json.loads(r[0]) for r in self.query(sql + " ORDER BY seq", args)]

    def append_record(self, record: Mapping[str, Any]) -> str:
        """Append a non-segment record (tombstone, export…) to its camera's chain; returns its hash.

        ``record`` must already carry ``seq``/``prev`` from :meth:`chain_head`;
        a record that does not extend the head is refused.
        """
        with self.transaction() as db:
            return self.append_record_in(db, record)

    def append_record_in(self, db: sqlite3.Connection, record: Mapping[str, Any]) -> str:
        """:meth:`append_record` inside the caller's :meth:`transaction` (``db`` is what it yielded).

        Lets a caller commit records together with its own rows, e.g. the sweep's
        tombstones with their segments' state; :meth:`chain_head` called on the
        same thread inside that transaction already sees records appended in it.
        """
        if not db.in_transaction:  # autocommit would make each record its own transaction
            raise IndexError_("append_record_in needs an open Index.transaction()")
        rhash = record_hash(record)
        _append_ledger(db, record, rhash)
        return rhash

    # ------------------------------------------------------------------ segments

    def insert_segment(self, record: Mapping[str, Any], *, version_id: str | None,
                       skeleton: bytes | None = None) -> SegmentRow:
        """Store a segment's ledger record and index row (and its skeleton) in one transaction; a repeat is a no-op.

        Refuses a record that does not extend the camera's chain head (someone
        else wrote the same seq with different content).
        """
        camera, seq = record["camera"], record["seq"]
        rhash = record_hash(record)
        sid = segment_id(camera, seq)
        with self.transaction() as db:
            existing = db.execute("SELECT hash FROM ledger WHERE camera = ? AND seq = ?", (camera, seq)).fetchone()
            if existing:
                if existing[0] != rhash:
                    raise IndexError_(f"{sid}: ledger already holds a different record for this seq")
            else:
                _append_ledger(db, record, rhash)
                db.execute(
                    f"INSERT INTO segments ({_SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                    (
                        sid, camera, seq, parse_rfc3339(record["start"]), parse_rfc3339(record["end"]),
                        int(record["partial"]), record["size"], record["sha256"], record["object_key"],
                        record["object_size"], record["object_sha256"], version_id, record["key_id"], rhash,
                        "stored", now_ms(),
                    ),
                )
                if skeleton is not None:
                    db.execute("INSERT OR REPLACE INTO segment_skeletons (id, sha256, skeleton) VALUES (?, ?, ?)",
                               (sid, record["sha256"], skeleton))
            row = db.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,)).fetchone()
        return _row(row)

    def skeletons(self, rows: Sequence[SegmentRow]) -> dict[str, bytes]:
        """The stored skeletons of ``rows`` that describe their current bytes (by segment id)."""
        found: dict[str, bytes] = {}
        want = {r.id: r.sha256 for r in rows}
        ids = list(want)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for sid, sha, blob in self.query(
                    f"SELECT id, sha256, skeleton FROM segment_skeletons WHERE id IN ({', '.join('?' * len(chunk))})",
                    tuple(chunk)):
                if want[sid] == sha:
                    found[sid] = bytes(blob)
        return found

    def segment(self, sid: str) -> SegmentRow | None:
        rows = self.query(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,))
        return _row(rows[0]) if rows else None

    def segment_by_object_key(self, object_key: str) -> SegmentRow | None:
        rows = self.query(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE object_key = ?", (object_key,))
        return _row(rows[0]) if rows else None

    def segments(
        self,
        camera: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        limit: int | None = None,
        after_start_ms: int | None = None,
        state: str | None = None,
    ) -> list[SegmentRow]:
        """Segments overlapping [start_ms, end_ms) (in ``state`` if given), ordered by camera then start time."""
        sql, args = _select(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments",
            self._overlap(camera, start_ms, end_ms) + [("start_ms > ?", after_start_ms), ("state = ?", state)],
            order="camera, start_ms", limit=limit,
        )
        return [_row(r) for r in self.query(sql, args)]

    def spans(self, camera: str, start_ms: int, end_ms: int, *, state: str | None = None) -> list[tuple[int, int]]:
        """(start_ms, end_ms) of one camera's segments overlapping [start_ms, end_ms), in time order.

        What the timeline needs and no more: building a day's 8,640
        ``SegmentRow`` objects was two thirds of the route's time.
        """
        sql, args = _select("SELECT start_ms, end_ms FROM segments",
                            self._overlap(camera, start_ms, end_ms) + [("state = ?", state)],
                            order="camera, start_ms", limit=None)
        return [(a, b) for a, b in self.query(sql, args)]

    def _overlap(self, camera: str | None, start_ms: int | None, end_ms: int | None) -> list[tuple[str, Any]]:
        earliest = None
        if start_ms is not None:
            # No segment overlapping the range starts before start_ms - the longest segment.
            earliest = start_ms - int(self.query("SELECT value FROM meta WHERE key = 'max_segment_ms'")[0][0])
        return [("camera = ?", camera), ("start_ms >= ?", earliest), ("end_ms > ?", start_ms), ("start_ms < ?", end_ms)]

    def last_end_ms(self, camera: str) -> int | None:
        rows = self.query("SELECT MAX(end_ms) FROM segments WHERE camera = ?", (camera,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def last_object_key(self, camera: str) -> str | None:
        """The object key of the camera's newest segment (keys sort by time)."""
        rows = self.query("SELECT MAX(object_key) FROM segments WHERE camera = ?", (camera,))
        return rows[0][0] if rows else None

    def latest_checkpoint_seq(self, camera: str) -> int | None:
        """The seq of the camera's newest checkpoint the index knows, None when none (or no table yet)."""
        try:
            rows = self.query("SELECT MAX(seq) FROM checkpoints WHERE camera = ?", (camera,))
        except sqlite3.OperationalError:  # the custody stage creates the table on its first start
            return None
        return rows[0][0] if rows else None

    def ledger_cameras(self) -> list[str]:
        """Every camera with at least one ledger record."""
        return [r[0] for r in self.query("SELECT DISTINCT camera FROM ledger ORDER BY camera")]

    def has_segments(self, camera: str) -> bool:
        return bool(self.query("SELECT 1 FROM segments WHERE camera = ? LIMIT 1", (camera,)))

    # ------------------------------------------------------------------ audit

    def append_audit(
        self, *, actor: str, role: str, action: str, target: str, detail: Mapping[str, Any], ts_ms: int | None = None
    ) -> AuditEntry:
        """Append one hash-chained audit entry."""
        ts = ts_ms if ts_ms is not None else now_ms()
        with self.transaction() as db:
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

    def audit_entries(
        self,
        *,
        action: str | None = None,
        target: str | None = None,
        actor: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Audit entries matching every given filter, oldest first."""
        sql, args = _select(
            "SELECT id, ts_ms, actor, role, action, target, detail, prev, hash FROM audit",
            [("actor = ?", actor), ("ts_ms >= ?", start_ms), ("ts_ms < ?", end_ms), ("id > ?", after_id),
             ("action = ?", action), ("target = ?", target)],
            order="id", limit=limit,
        )
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in self.query(sql, args)
        ]

    # ------------------------------------------------------------------ tokens

    def add_token(self, *, name: str, role: str, cameras: list[str] | None, token_sha256: str) -> None:
        """Register a token by its hash; a name already used by a live token is refused."""
        with self.transaction() as db:
            row = db.execute("SELECT revoked_ms FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise IndexError_(f"a token named {name!r} exists; revoke it first")
            db.execute("DELETE FROM tokens WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO tokens (name, role, cameras, token_sha256, created_ms) VALUES (?, ?, ?, ?, ?)",
                (name, role, json.dumps(cameras) if cameras is not None else None, token_sha256, now_ms()),
            )

    def revoke_token(self, name: str) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL", (now_ms(), name)
            )
            return cur.rowcount > 0

    def token_by_hash(self, token_sha256: str) -> tuple[str, str, list[str] | None, int | None] | None:
        """(name, role, cameras, revoked_ms) of the token with this hash."""
        rows = self.query("SELECT name, role, cameras, revoked_ms FROM tokens WHERE token_sha256 = ?", (token_sha256,))
        if not rows:
            return None
        name, role, cams, revoked = rows[0]
        return name, role, json.loads(cams) if cams is not None else None, revoked

    def tokens(self) -> list[tuple[str, str, list[str] | None, int, int | None]]:
        rows = self.query("SELECT name, role, cameras, created_ms, revoked_ms FROM tokens ORDER BY name")
        return [(n, r, json.loads(c) if c is not None else None, cr, rv) for n, r, c, cr, rv in rows]

    # ------------------------------------------------------------------ cameras

    def cameras(self, *, include_deleted: bool = False) -> list[tuple[str, dict[str, Any], str, str | None, int | None]]:
        """(id, config, source, config_hash, deleted_ms) of registered cameras."""
        sql = "SELECT id, config, source, config_hash, deleted_ms FROM cameras"
        if not include_deleted:
            sql += " WHERE deleted_ms IS NULL"
        return [(i, json.loads(c), s, h, d) for i, c, s, h, d in self.query(sql + " ORDER BY id")]

    def put_camera(self, camera_id: str, config: Mapping[str, Any], *, source: str, config_hash: str | None = None) -> None:
        """Insert or replace a camera's registration (undeleting it)."""
        now = now_ms()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO cameras (id, config, source, config_hash, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET config = excluded.config, "
                "source = excluded.source, config_hash = COALESCE(excluded.config_hash, cameras.config_hash), "
                "updated_ms = excluded.updated_ms, deleted_ms = NULL",
                (camera_id, json.dumps(dict(config), sort_keys=True), source, config_hash, now, now),
            )

    def delete_camera(self, camera_id: str) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE cameras SET deleted_ms = ?, updated_ms = ? WHERE id = ? AND deleted_ms IS NULL",
                (now_ms(), now_ms(), camera_id),
            )
            return cur.rowcount > 0
