"""The retention stage's tables: rules, holds, pending deletions, legal holds, runs; and ``segments.state``.

``segments.state`` goes ``stored`` → ``pending_delete`` → ``deleted`` (or back
to ``stored`` when a hold arrived before the object was deleted), and only
here. A segment is marked pending with its ``retention_pending`` row in one
transaction and leaves both in one transaction; a deletion is finished with
its tombstone in the same transaction (:meth:`RetentionTables.finish_deleted`).
What the rows mean is ``retention/store.py``'s, which turns them into the
stage's types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from storage.index._engine import Engine, Tx
from storage.index.segments import append_in, head_in
from storage.ledger import ChainHead, record_hash

HOLD_COLUMNS = ("n, case_id, cameras, start_ms, end_ms, reason, expires_ms, created_ms, created_by, "
                "released_ms, released_by, release_reason")
RULES_COLUMNS = "version, rules, source, changed_ms, actor, config_hash"
PENDING_COLUMNS = ("id, camera, seq, object_key, version_id, record_hash, object_size, start_ms, end_ms, "
                   "rule, run_id, attempts, error")


def _current_rules(tx: Tx) -> tuple | None:
    return tx.one(f"SELECT {RULES_COLUMNS} FROM retention_rules ORDER BY version DESC LIMIT 1")


class RetentionTables:
    """``index.retention``: rows as tuples in the column orders above."""

    def __init__(self, engine: Engine):
        self._engine = engine

    # ------------------------------------------------------------------ rules

    def current_rules(self) -> tuple | None:
        """(version, rules JSON, source, changed_ms, actor, config_hash) of the rules in force."""
        with self._engine.read() as tx:
            return _current_rules(tx)

    def put_rules(self, decide: Callable[[tuple | None], tuple[str, str, str, str | None, int] | None]
                  ) -> tuple[tuple | None, int | None]:
        """Store a new rules version if ``decide(current)`` gives one; (current row, new version or None).

        ``decide`` gets the rules in force and answers (rules JSON, source,
        actor, config_hash, changed_ms), or None to keep them: read and write in
        one transaction, under the rules' lock.
        """
        with self._engine.write() as tx:
            tx.lock("retention_rules")
            old = _current_rules(tx)
            new = decide(old)
            if new is None:
                return old, None
            version = (tx.scalar("SELECT MAX(version) FROM retention_rules") or 0) + 1
            rules, source, actor, config_hash, changed_ms = new
            tx.execute("INSERT INTO retention_rules (version, rules, source, config_hash, changed_ms, actor) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (version, rules, source, config_hash, changed_ms, actor))
        return old, version

    # ------------------------------------------------------------------ holds

    def holds(self, *, include_released: bool = True) -> list[tuple]:
        sql = f"SELECT {HOLD_COLUMNS} FROM retention_holds"
        if not include_released:
            sql += " WHERE released_ms IS NULL"
        return self._engine.all(sql + " ORDER BY n")

    def hold(self, n: int) -> tuple | None:
        return self._engine.one(f"SELECT {HOLD_COLUMNS} FROM retention_holds WHERE n = ?", (n,))

    def add_hold(self, *, case_id: str, cameras: Sequence[str] | None, start_ms: int, end_ms: int | None,
                 reason: str, expires_ms: int | None, actor: str, now_ms: int) -> int:
        """A new hold, committed; its number (never reused)."""
        with self._engine.write() as tx:
            return tx.scalar(
                "INSERT INTO retention_holds (case_id, cameras, start_ms, end_ms, reason, expires_ms, created_ms, "
                "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING n",
                (case_id, json.dumps(list(cameras)) if cameras is not None else None, start_ms, end_ms, reason,
                 expires_ms, now_ms, actor))

    def release_hold(self, n: int, *, actor: str, reason: str, now_ms: int) -> tuple[tuple | None, bool]:
        """(the hold's row before, whether this call released it): False when already released."""
        with self._engine.write() as tx:
            row = tx.one(f"SELECT {HOLD_COLUMNS} FROM retention_holds WHERE n = ?", (n,))
            if row is None or row[9] is not None:
                return row, False
            changed = tx.execute("UPDATE retention_holds SET released_ms = ?, released_by = ?, release_reason = ? "
                                 "WHERE n = ? AND released_ms IS NULL", (now_ms, actor, reason, n))
            return row, changed > 0

    def expired_unnoted(self, now_ms: int) -> list[tuple]:
        return self._engine.all(
            f"SELECT {HOLD_COLUMNS} FROM retention_holds WHERE released_ms IS NULL AND expires_ms IS NOT NULL "
            "AND expires_ms <= ? AND expiry_noted = 0 ORDER BY n", (now_ms,))

    def note_expired(self, n: int) -> None:
        with self._engine.write() as tx:
            tx.execute("UPDATE retention_holds SET expiry_noted = 1 WHERE n = ?", (n,))

    def covered(self, start_ms: int, end_ms: int | None, cameras: Sequence[str] | None) -> list[tuple]:
        """(id, camera, object_key, version_id, state) of segments not deleted overlapping a hold's range."""
        sql = "SELECT id, camera, object_key, version_id, state FROM segments WHERE state != 'deleted' AND end_ms > ?"
        args: list[Any] = [start_ms]
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        if cameras is not None:
            sql += f" AND camera IN ({', '.join('?' * len(cameras))})"
            args += list(cameras)
        return self._engine.all(sql, tuple(args))

    # ------------------------------------------------------------------ legal holds

    def legal_holds(self) -> list[tuple]:
        """(segment_id, camera, object_key, version_id) of every legal hold this stage set."""
        return self._engine.all("SELECT segment_id, camera, object_key, version_id FROM retention_legal_holds")

    def add_legal_hold(self, segment_id: str, camera: str, object_key: str, version_id: str | None,
                       now_ms: int) -> None:
        with self._engine.write() as tx:
            tx.execute("INSERT INTO retention_legal_holds (segment_id, camera, object_key, version_id, set_ms) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (segment_id) DO UPDATE SET camera = excluded.camera, "
                       "object_key = excluded.object_key, version_id = excluded.version_id, set_ms = excluded.set_ms",
                       (segment_id, camera, object_key, version_id, now_ms))

    def remove_legal_hold(self, segment_id: str) -> None:
        with self._engine.write() as tx:
            tx.execute("DELETE FROM retention_legal_holds WHERE segment_id = ?", (segment_id,))

    # ------------------------------------------------------------------ segments for the decision

    def live_segments(self) -> list[tuple[str, str, int, int, int, str, int]]:
        """(id, camera, start_ms, end_ms, object_size, state, ingested_ms) of every segment not deleted."""
        return self._engine.all("SELECT id, camera, start_ms, end_ms, object_size, state, ingested_ms "
                                "FROM segments WHERE state != 'deleted'")

    def usage_bytes(self) -> int:
        """Bytes in the bucket per the index: the object size of every segment not deleted."""
        return int(self._engine.scalar("SELECT COALESCE(SUM(object_size), 0) FROM segments WHERE state != 'deleted'"))

    # ------------------------------------------------------------------ two-phase deletion

    def mark_pending(self, selected: Iterable[tuple[str, str]], *, run_id: int, now_ms: int) -> list[str]:
        """stored → pending_delete with the rule, in one transaction; the ids actually marked."""
        marked: list[str] = []
        with self._engine.write() as tx:
            for sid, rule in selected:
                if tx.execute("UPDATE segments SET state = 'pending_delete' WHERE id = ? AND state = 'stored'",
                              (sid,)):
                    tx.execute("INSERT INTO retention_pending (segment_id, rule, run_id, marked_ms) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT (segment_id) DO UPDATE SET rule = excluded.rule, "
                               "run_id = excluded.run_id, marked_ms = excluded.marked_ms, attempts = 0, error = NULL",
                               (sid, rule, run_id, now_ms))
                    marked.append(sid)
        return marked

    def pending(self) -> list[tuple]:
        """Every segment pending deletion, in :data:`PENDING_COLUMNS` order, by camera and seq."""
        return self._engine.all(
            "SELECT s.id, s.camera, s.seq, s.object_key, s.version_id, s.record_hash, s.object_size, s.start_ms, "
            "s.end_ms, COALESCE(p.rule, 'retention'), COALESCE(p.run_id, 0), COALESCE(p.attempts, 0), p.error "
            "FROM segments s LEFT JOIN retention_pending p ON p.segment_id = s.id "
            "WHERE s.state = 'pending_delete' ORDER BY s.camera, s.seq")

    def pending_count(self) -> int:
        return int(self._engine.scalar("SELECT COUNT(*) FROM segments WHERE state = 'pending_delete'"))

    def note_failures(self, errors: Mapping[str, str]) -> None:
        """Count a failed attempt and keep the last S3 error (cut to 500 characters) of each segment."""
        with self._engine.write() as tx:
            tx.many("UPDATE retention_pending SET attempts = attempts + 1, error = ? WHERE segment_id = ?",
                    [(err[:500], sid) for sid, err in errors.items()])

    def finish_deleted(self, camera: str, items: Sequence[tuple[str, int]],
                       tombstone: Callable[[ChainHead, int], Mapping[str, Any] | None],
                       each: Callable[[int], None] | None = None) -> None:
        """pending_delete → deleted for ``items`` ((segment id, segment seq)) of one camera, with their tombstones.

        One transaction under the camera's chain lock: for each item
        ``tombstone(head, index)`` builds the record to append at the current
        head (None: the segment has one already), ``each(index)`` runs (a test's
        crash point), then the row is finished.
        """
        with self._engine.write() as tx:
            tx.lock(f"ledger:{camera}")
            for i, (sid, _seq) in enumerate(items):
                record = tombstone(head_in(tx, camera), i)
                if record is not None:
                    append_in(tx, record, record_hash(record))
                if each is not None:
                    each(i)
                tx.execute("UPDATE segments SET state = 'deleted' WHERE id = ? AND state = 'pending_delete'", (sid,))
                tx.execute("DELETE FROM retention_pending WHERE segment_id = ?", (sid,))

    def unmark(self, segment_id: str) -> None:
        """A hold arrived before the object was deleted: back to stored."""
        with self._engine.write() as tx:
            tx.execute("UPDATE segments SET state = 'stored' WHERE id = ? AND state = 'pending_delete'", (segment_id,))
            tx.execute("DELETE FROM retention_pending WHERE segment_id = ?", (segment_id,))

    # ------------------------------------------------------------------ runs

    def start_run(self, trigger: str, now_ms: int, *, keep: int) -> int:
        """A new run's id; runs older than the last ``keep`` are dropped."""
        with self._engine.write() as tx:
            run_id = tx.scalar("INSERT INTO retention_runs (trigger, started_ms) VALUES (?, ?) RETURNING id",
                               (trigger, now_ms))
            tx.execute("DELETE FROM retention_runs WHERE id <= ?", (run_id - keep,))
        return int(run_id)

    def finish_run(self, run_id: int, report: Mapping[str, Any], now_ms: int) -> None:
        with self._engine.write() as tx:
            tx.execute("UPDATE retention_runs SET finished_ms = ?, report = ? WHERE id = ?",
                       (now_ms, json.dumps(report, sort_keys=True), run_id))
