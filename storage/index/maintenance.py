"""Whole-index operations: what ``nvr reindex`` reads and replaces, counts, and a copy of the index."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from storage.errors import IndexConflict, IndexMisconfigured
from storage.index._engine import Engine
from storage.index._migrations import (
    SERIALS,
    TABLES,
    applied,
    columns,
    derived_columns,
    reset_serial,
)
from storage.index.checkpoints import CheckpointRow, insert_in
from storage.index.segments import INSERT_SEGMENT, SEGMENT_COLUMNS, note_duration
from storage.ledger import parse_record

_LEDGER_INSERT = ("INSERT INTO ledger (camera, seq, type, record, hash, prev, start_ms, end_ms, segment_seq) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


class Maintenance:
    """``index.maintenance``."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def counts(self) -> tuple[int, int]:
        """(ledger records, segment rows)."""
        with self._engine.read() as tx:
            return (int(tx.scalar("SELECT COUNT(*) FROM ledger")), int(tx.scalar("SELECT COUNT(*) FROM segments")))

    def ledger_texts(self) -> list[tuple[str, int, str]]:
        """(camera, seq, record text) of every ledger record."""
        return [(c, s, t) for c, s, t in self._engine.all("SELECT camera, seq, record FROM ledger")]

    def segment_rows(self) -> list[tuple]:
        """Every segment row, in :data:`storage.index.segments.SEGMENT_COLUMNS` order."""
        return self._engine.all(f"SELECT {SEGMENT_COLUMNS} FROM segments")

    def replace_chains(self, ledger_rows: Iterable[Sequence[Any]], segment_rows: Iterable[Sequence[Any]],
                       checkpoints: Iterable[CheckpointRow]) -> None:
        """Replace ledger, segments and checkpoints with the given rows, in one transaction (reindex).

        ``ledger_rows`` are (camera, seq, type, record text, hash, prev);
        ``segment_rows`` follow ``SEGMENT_COLUMNS``. Skeletons and pending
        deletions of segments that no longer exist go too.
        """
        ledger = [(*r, *derived_columns(parse_record(r[3]))) for r in ledger_rows]
        segments = [tuple(r) for r in segment_rows]
        with self._engine.write() as tx:
            tx.lock("nvr-reindex")
            for camera in {r[0] for r in ledger}:
                tx.lock(f"ledger:{camera}")
            tx.execute("DELETE FROM ledger")
            tx.execute("DELETE FROM segments")
            tx.execute("DELETE FROM checkpoints")
            tx.many(_LEDGER_INSERT, ledger)
            tx.many(INSERT_SEGMENT, segments)
            tx.execute("DELETE FROM segment_skeletons WHERE id NOT IN (SELECT id FROM segments)")
            tx.execute("DELETE FROM retention_pending WHERE segment_id NOT IN "
                       "(SELECT id FROM segments WHERE state = 'pending_delete')")
            if segments:
                note_duration(tx, max(r[4] - r[3] for r in segments))
            insert_in(tx, checkpoints)

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the index as one file (SQLite only: PostgreSQL has pg_dump)."""
        backup = getattr(self._engine, "backup_to", None)
        if backup is None:
            raise IndexMisconfigured(f"the index {self._engine.describe()} is PostgreSQL: copy it with pg_dump")
        backup(target)

    def table_counts(self) -> dict[str, int]:
        """Rows per table."""
        with self._engine.read() as tx:
            return {t: int(tx.scalar(f"SELECT COUNT(*) FROM {t}")) for t in TABLES}

    def copy_into(self, target: Maintenance, *, batch: int = 5000,
                  progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
        """Copy every row of this index into ``target``, an empty index at the same schema version; rows per table.

        One transaction on the target: a copy that fails leaves it empty. This
        index is read in one snapshot, so a copy taken beside a running server
        is consistent (what it committed later is not in the copy).
        """
        src, dst = self._engine, target._engine
        if applied(src) != applied(dst):
            raise IndexMisconfigured(f"{dst.describe()} is at schema version {applied(dst)}, "
                                     f"{src.describe()} at {applied(src)}: open both with this release first")
        copied: dict[str, int] = {}
        with dst.write() as out, src.read() as tx:
            out.lock("nvr-reindex")
            busy = [t for t in TABLES if t != "meta" and out.scalar(f"SELECT COUNT(*) FROM {t}")]
            if busy:
                raise IndexConflict(f"{dst.describe()} is not empty ({', '.join(busy)} hold rows): "
                                    "copy only into a new database")
            out.execute("DELETE FROM meta")  # the target's own defaults give way to the source's values
            for table in TABLES:
                have = set(columns(out, table))  # read once, not once per source column
                cols = [c for c in columns(tx, table) if c in have]
                names = ", ".join(cols)
                insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})"
                n = 0
                for rows in tx.stream(f"SELECT {names} FROM {table}", size=batch):
                    out.many(insert, [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows])
                    n += len(rows)
                    if progress is not None:
                        progress(table, n)
                if table in SERIALS:
                    reset_serial(out, table)
                copied[table] = n
        return copied
