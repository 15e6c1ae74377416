"""The index: the one owner of every SQL statement of nvr, on SQLite (embedded) or PostgreSQL (shared).

``Index(target)`` opens ``target`` — a path (SQLite, the default
``<data_dir>/index.sqlite3``) or a ``postgresql://`` URL — and applies the
migrations it lacks (``_migrations.py``). The tables are grouped by concern:
ledger, segments and skeletons (``segments.py``), the audit log
(``audit.py``), tokens and cameras (``catalog.py``) are methods of ``Index``
itself; checkpoints, exports, retention and whole-index maintenance are
``index.checkpoints``, ``index.exports``, ``index.retention`` and
``index.maintenance``. Rules and invariants: ``docs/schema.md``.

Methods are synchronous and thread-safe: async callers run them in an
executor. Reads never wait for a write (WAL readers; a pool on PostgreSQL).
Every write is one transaction, so a crash leaves all of a write or none.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.errors import IndexMisconfigured
from storage.index._engine import Engine
from storage.index._migrations import LATEST, applied, migrate
from storage.index.audit import AuditEntry, AuditTables
from storage.index.catalog import CatalogTables
from storage.index.checkpoints import CheckpointRow, Checkpoints
from storage.index.cluster import ClusterTables
from storage.index.exports import ExportRow, Exports
from storage.index.maintenance import Maintenance
from storage.index.people import PeopleTables
from storage.index.retention import RetentionTables
from storage.index.segments import SegmentRow, SegmentTables

__all__ = ["AuditEntry", "CheckpointRow", "ExportRow", "Index", "SegmentRow", "SCHEMA_VERSION", "open_engine",
           "is_url"]

SCHEMA_VERSION = LATEST
PASSWORD_ENV = "NVR_INDEX_PASSWORD"


def is_url(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL index rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_engine(target: str | Path, *, password_file: Path | None = None) -> Engine:
    """The engine for ``target``; a PostgreSQL password comes from ``password_file`` or ``$NVR_INDEX_PASSWORD``."""
    if is_url(target):
        from storage.index._postgres import PostgresEngine

        password = os.environ.get(PASSWORD_ENV)
        if password_file is not None:
            try:
                password = password_file.read_text().strip()
            except OSError as e:
                raise IndexMisconfigured(f"[index] password_file {password_file} can't be read: {e.strerror}") from e
        return PostgresEngine(str(target), password=password)
    if isinstance(target, str) and "://" in target:
        raise IndexMisconfigured(f"[index] url must be postgresql://… or a file path, not {target.split('://')[0]}://")
    from storage.index._sqlite import SqliteEngine

    return SqliteEngine(Path(target))


class Index(SegmentTables, AuditTables, CatalogTables):
    """Segments, ledger, audit log, tokens and cameras; the stage tables as attributes."""

    def __init__(self, target: str | Path, *, password_file: Path | None = None, migrate_schema: bool = True):
        self._engine = open_engine(target, password_file=password_file)
        self.path = Path(target) if not is_url(target) else None
        try:
            if migrate_schema:
                migrate(self._engine)
        except BaseException:
            self._engine.close()
            raise
        self.checkpoints = Checkpoints(self._engine)
        self.exports = Exports(self._engine)
        self.retention = RetentionTables(self._engine)
        self.maintenance = Maintenance(self._engine)
        self.cluster = ClusterTables(self._engine)
        self.people = PeopleTables(self._engine)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect

    def describe(self) -> str:
        """Where the index is (a path, or a URL without its password)."""
        return self._engine.describe()

    def hold(self, name: str, *, wait: bool = True, lapse_s: float | None = None, keepalive: bool = False):
        """A named lock across transactions and processes (see ``Engine.hold``); yields whether it is held."""
        return self._engine.hold(name, wait=wait, lapse_s=lapse_s, keepalive=keepalive)

    def listen(self, on_notify, stop) -> None:
        """Block, calling ``on_notify(payload)`` for every cluster notification, until ``stop`` (a threading.Event)."""
        from storage.index.cluster import CHANNEL

        self._engine.listen(CHANNEL, on_notify, stop)

    def schema_version(self) -> int:
        return applied(self._engine)

    def latest_checkpoint_seq(self, camera: str) -> int | None:
        """The seq of the camera's newest checkpoint the index knows, None when none."""
        return self.checkpoints.latest_seq(camera)

    def close(self) -> None:
        self._engine.close()
