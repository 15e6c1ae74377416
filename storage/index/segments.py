"""Segments and chain heads: the ledger (every camera's hash chain), the segment rows and their skeletons."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from nvr.base.ids import segment_id
from nvr.base.times import now_ms, parse_rfc3339
from storage.errors import IndexError_
from storage.index._engine import Engine, Row, Tx
from storage.index._migrations import derived_columns
from storage.index.cluster import Fenced, fence_problem_in
from storage.ledger import GENESIS, ChainHead, canonical_json, record_hash


class SegmentRow(NamedTuple):
    """One ``segments`` row. A named tuple, not a dataclass: a camera-day is 8,640 of them, and a
    frozen dataclass took 2 µs each to build (a third of the day query), this 0.5 µs."""

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


SEGMENT_COLUMNS = (
    "id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, object_size, "
    "object_sha256, version_id, key_id, record_hash, state, ingested_ms"
)
_LEDGER_COLUMNS = "camera, seq, type, record, hash, prev, start_ms, end_ms, segment_seq"


def segment_row(r: Sequence[Any]) -> SegmentRow:
    return SegmentRow(*r[:5], bool(r[5]), *r[6:])  # type: ignore[arg-type]


def select(select_: str, filters: list[tuple[str, Any]], *, order: str, limit: int | None) -> tuple[str, tuple]:
    """``select_`` with one ``AND`` condition per filter whose value is not None, ordered and limited."""
    sql, args = select_ + " WHERE 1=1", []
    for condition, value in filters:
        if value is not None:
            sql += f" AND {condition}"
            args.append(value)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, tuple(args)


def by_ids(tx: Tx, select_: str, ids: Iterable[str], chunk: int = 500) -> Iterator[Row]:
    """The rows of ``select_ WHERE id IN (…)`` for ``ids``, asked ``chunk`` at a time (a statement's
    parameters are bounded)."""
    ids = list(ids)
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        yield from tx.all(f"{select_} WHERE id IN ({', '.join('?' * len(part))})", tuple(part))


def ledger_row(record: Mapping[str, Any], rhash: str) -> tuple:
    """The ``ledger`` row of ``record`` (its canonical JSON, exactly the bytes hashed, and the derived columns)."""
    return (record["camera"], record["seq"], record["type"], canonical_json(record).decode("utf-8"), rhash,
            record["prev"], *derived_columns(dict(record)))


def head_in(tx: Tx, camera: str) -> ChainHead:
    row = tx.one("SELECT seq, hash FROM ledger WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,))
    return ChainHead(camera, row[0], row[1]) if row else ChainHead(camera, -1, GENESIS)


def append_in(tx: Tx, record: Mapping[str, Any], rhash: str) -> None:
    """Insert a record that must extend its camera's chain head (inside ``tx``, holding ``ledger:<camera>``).

    The chain's lock, taken by the caller before it reads anything of the chain,
    makes read-head-then-insert one step for every writer of this database; the
    ``(camera, seq)`` key refuses a fork that bypassed it.
    """
    camera, seq = record["camera"], record["seq"]
    head = head_in(tx, camera)
    if seq != head.seq + 1 or record["prev"] != head.hash:
        raise IndexError_(f"{camera}:{seq}: record does not extend the chain (head seq {head.seq})")
    tx.execute(f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ledger_row(record, rhash))


def note_duration(tx: Tx, duration_ms: int) -> None:
    """Keep ``meta.max_segment_ms`` the longest segment ever indexed (range queries bound start_ms by it)."""
    tx.execute("UPDATE meta SET value = ? WHERE key = 'max_segment_ms' AND CAST(value AS INTEGER) < ?",
               (str(duration_ms), duration_ms))


def segment_values(record: Mapping[str, Any], rhash: str, *, version_id: str | None, state: str = "stored",
                   ingested_ms: int | None = None) -> tuple:
    """The ``segments`` row of a segment record, in :data:`SEGMENT_COLUMNS` order."""
    return (segment_id(record["camera"], record["seq"]), record["camera"], record["seq"],
            parse_rfc3339(record["start"]), parse_rfc3339(record["end"]), int(record["partial"]), record["size"],
            record["sha256"], record["object_key"], record["object_size"], record["object_sha256"], version_id,
            record["key_id"], rhash, state, ingested_ms if ingested_ms is not None else now_ms())


INSERT_SEGMENT = f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 16)})"


class SegmentTables:
    """Ledger, segments and skeletons (a part of :class:`storage.index.Index`)."""

    _engine: Engine

    # ------------------------------------------------------------------ ledger

    def chain_head(self, camera: str) -> ChainHead:
        with self._engine.read() as tx:
            return head_in(tx, camera)

    def ledger_records(self, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT record FROM ledger WHERE camera = ? AND seq >= ?"
        args: tuple = (camera, from_seq)
        if to_seq is not None:
            sql += " AND seq <= ?"
            args += (to_seq,)
        return [json.loads(r[0]) for r in self._engine.all(sql + " ORDER BY seq", args)]

    def ledger_texts(self, camera: str, lo: int, hi: int) -> list[tuple[int, str]]:
        """(seq, record text) of ``camera``'s records in [lo, hi], as stored (it may not be JSON: verify says so)."""
        return [(s, t) for s, t in self._engine.all(
            "SELECT seq, record FROM ledger WHERE camera = ? AND seq BETWEEN ? AND ? ORDER BY seq", (camera, lo, hi))]

    def append_record(self, record: Mapping[str, Any]) -> str:
        """Append a non-segment record (tombstone, export…) to its camera's chain; returns its hash.

        ``record`` must already carry ``seq``/``prev`` from :meth:`chain_head`;
        a record that does not extend the head is refused.
        """
        rhash = record_hash(record)
        with self._engine.write() as tx:
            tx.lock(f"ledger:{record['camera']}")
            append_in(tx, record, rhash)
        return rhash

    def ledger_cameras(self) -> list[str]:
        """Every camera with at least one ledger record."""
        return [r[0] for r in self._engine.all("SELECT DISTINCT camera FROM ledger ORDER BY camera")]

    def has_ledger(self, camera: str) -> bool:
        return self._engine.one("SELECT 1 FROM ledger WHERE camera = ? LIMIT 1", (camera,)) is not None

    def segment_record_seqs(self, camera: str, start_ms: int, end_ms: int) -> list[int]:
        """Seqs of ``camera``'s segment records whose times overlap [start_ms, end_ms) (from the ledger alone)."""
        return [r[0] for r in self._engine.all(
            "SELECT seq FROM ledger WHERE camera = ? AND type = 'segment' AND end_ms > ? AND start_ms < ?",
            (camera, start_ms, end_ms))]

    def tombstones(self, camera: str, lo: int, hi: int) -> list[tuple[int, str]]:
        """(seq, record text) of ``camera``'s tombstones for segment seqs in [lo, hi], by seq."""
        return [(s, t) for s, t in self._engine.all(
            "SELECT seq, record FROM ledger WHERE camera = ? AND type = 'tombstone' "
            "AND segment_seq BETWEEN ? AND ? ORDER BY seq", (camera, lo, hi))]

    def tombstone_seq(self, camera: str, segment_seq: int) -> int | None:
        """The ledger seq of an existing tombstone for ``camera``'s segment ``segment_seq``."""
        return self._engine.scalar(
            "SELECT seq FROM ledger WHERE camera = ? AND type = 'tombstone' AND segment_seq = ? AND seq > ? "
            "ORDER BY seq LIMIT 1", (camera, segment_seq, segment_seq))

    # ------------------------------------------------------------------ segments

    def insert_segment(self, record: Mapping[str, Any], *, version_id: str | None,
                       skeleton: bytes | None = None, fence_skew_ms: int = 0) -> SegmentRow:
        """Store a segment's ledger record and index row (and its skeleton) in one transaction; a repeat is a no-op.

        Refuses a record that does not extend the camera's chain head (someone
        else wrote the same seq with different content), and one recorded under a
        lease epoch that forbids it (:class:`Fenced`, ``storage.index.cluster``).
        """
        camera, seq = record["camera"], record["seq"]
        rhash = record_hash(record)
        sid = segment_id(camera, seq)
        with self._engine.write() as tx:
            tx.lock(f"ledger:{camera}")
            existing = tx.scalar("SELECT hash FROM ledger WHERE camera = ? AND seq = ?", (camera, seq))
            if existing is not None:
                if existing != rhash:
                    raise IndexError_(f"{sid}: ledger already holds a different record for this seq")
            else:
                if (problem := fence_problem_in(tx, record, fence_skew_ms)) is not None:
                    raise Fenced(problem)
                append_in(tx, record, rhash)
                values = segment_values(record, rhash, version_id=version_id)
                tx.execute(INSERT_SEGMENT, values)
                note_duration(tx, values[4] - values[3])
                if skeleton is not None:
                    tx.execute("INSERT INTO segment_skeletons (id, sha256, skeleton) VALUES (?, ?, ?) "
                               "ON CONFLICT (id) DO UPDATE SET sha256 = excluded.sha256, skeleton = excluded.skeleton",
                               (sid, record["sha256"], skeleton))
            row = tx.one(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,))
        return segment_row(row)

    def skeletons(self, rows: Sequence[SegmentRow]) -> dict[str, bytes]:
        """The stored skeletons of ``rows`` that describe their current bytes (by segment id)."""
        want = {r.id: r.sha256 for r in rows}
        with self._engine.read() as tx:
            return {sid: bytes(blob) for sid, sha, blob in by_ids(tx, "SELECT id, sha256, skeleton FROM segment_skeletons",
                                                               want) if want[sid] == sha}

    def segment(self, sid: str) -> SegmentRow | None:
        row = self._engine.one(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ?", (sid,))
        return segment_row(row) if row else None

    def segment_by_object_key(self, object_key: str) -> SegmentRow | None:
        row = self._engine.one(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE object_key = ?", (object_key,))
        return segment_row(row) if row else None

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
        with self._engine.read() as tx:
            sql, args = select(
                f"SELECT {SEGMENT_COLUMNS} FROM segments",
                _overlap(tx, camera, start_ms, end_ms) + [("start_ms > ?", after_start_ms), ("state = ?", state)],
                order="camera, start_ms", limit=limit,
            )
            return [segment_row(r) for r in tx.all(sql, args)]

    def spans(self, camera: str, start_ms: int, end_ms: int, *, state: str | None = None) -> list[tuple[int, int]]:
        """(start_ms, end_ms) of one camera's segments overlapping [start_ms, end_ms), in time order.

        What the timeline needs and no more: building a day's 8,640
        ``SegmentRow`` objects was two thirds of the route's time.
        """
        with self._engine.read() as tx:
            sql, args = select("SELECT start_ms, end_ms FROM segments",
                               _overlap(tx, camera, start_ms, end_ms) + [("state = ?", state)],
                               order="camera, start_ms", limit=None)
            return [(a, b) for a, b in tx.all(sql, args)]

    def segment_states(self, ids: Iterable[str]) -> dict[str, str]:
        """Segment id -> state, for the ids the index knows."""
        with self._engine.read() as tx:
            return dict(by_ids(tx, "SELECT id, state FROM segments", ids))

    def last_end_ms(self, camera: str) -> int | None:
        return self._engine.scalar("SELECT MAX(end_ms) FROM segments WHERE camera = ?", (camera,))

    def run_end_ms(self, camera: str, run: str, since_ms: int) -> int | None:
        """Where an ffmpeg run's last indexed segment ended (its object keys name the run; it began at ``since_ms``)."""
        return self._engine.scalar("SELECT MAX(end_ms) FROM segments WHERE camera = ? AND start_ms >= ? AND "
                                   "object_key LIKE ?", (camera, since_ms, f"%_{run}-%"))

    def last_object_key(self, camera: str) -> str | None:
        """The object key of the camera's newest segment (keys sort by time)."""
        return self._engine.scalar("SELECT MAX(object_key) FROM segments WHERE camera = ?", (camera,))

    def has_segments(self, camera: str) -> bool:
        return self._engine.one("SELECT 1 FROM segments WHERE camera = ? LIMIT 1", (camera,)) is not None


def _overlap(tx: Tx, camera: str | None, start_ms: int | None, end_ms: int | None) -> list[tuple[str, Any]]:
    earliest = None
    if start_ms is not None:
        # No segment overlapping the range starts before start_ms - the longest segment.
        longest = tx.scalar("SELECT value FROM meta WHERE key = 'max_segment_ms'")
        earliest = start_ms - int(longest or 0)
    return [("camera = ?", camera), ("start_ms >= ?", earliest), ("end_ms > ?", start_ms), ("start_ms < ?", end_ms)]
