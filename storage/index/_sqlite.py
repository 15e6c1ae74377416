"""The embedded backend: one SQLite file in WAL mode, one writer connection, a reader connection per thread.

WAL lets readers see the last commit while a write is open, so API reads never
queue behind an ingest commit. Writes take ``BEGIN IMMEDIATE`` on the one
writer connection: SQLite allows one writer per file, and IMMEDIATE makes a
second process (the CLI beside a server) wait for the write lock at ``BEGIN``
(busy timeout) instead of failing half-way through a transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.errors import IndexConflict, IndexError_, IndexUnavailable
from storage.index._engine import Engine, Row, Tx

BUSY_TIMEOUT_S = 30.0


def _translate(e: sqlite3.Error, where: str) -> IndexError_:
    if isinstance(e, sqlite3.IntegrityError):
        return IndexConflict(f"the index refused a write: {e}")
    if isinstance(e, sqlite3.OperationalError):  # locked, busy, disk full, I/O error
        return IndexUnavailable(f"the index is unavailable: {e}")  # no path: API clients read this
    return IndexError_(f"the index {where} failed: {e}")


class _SqliteTx(Tx):
    dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection, where: str):
        self._db, self._where = db, where

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self._db.execute(sql, args).rowcount
        except sqlite3.Error as e:
            raise _translate(e, self._where) from e

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        try:
            return self._db.execute(sql, args).fetchone()
        except sqlite3.Error as e:
            raise _translate(e, self._where) from e

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _translate(e, self._where) from e

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as e:
            raise _translate(e, self._where) from e

    def stream(self, sql: str, args: Sequence[Any] = (), size: int = 5000) -> Iterator[list[Row]]:
        try:
            cur = self._db.execute(sql, args)
            while batch := cur.fetchmany(size):
                yield batch
        except sqlite3.Error as e:
            raise _translate(e, self._where) from e



class SqliteEngine(Engine):
    """``<data_dir>/index.sqlite3``: the default for one node."""

    dialect = "sqlite"

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wlock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._rlock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss, so the spool file is never deleted before its row is durable.
            self._writer.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            self._writer.close()
            raise _translate(e, str(path)) from e

    def describe(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as e:
            raise IndexUnavailable(f"index {self.path} can't be opened: {e}") from e
        return db

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "reader", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only=ON")
            with self._rlock:
                if self._closed:
                    db.close()
                    raise IndexUnavailable(f"index {self.path} is closed")
                self._readers.append(db)
            self._local.reader = db
        return db

    @contextmanager
    def _open_write(self) -> Iterator[Tx]:
        with self._wlock:
            if self._closed:
                raise IndexUnavailable(f"index {self.path} is closed")
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _translate(e, str(self.path)) from e
            try:
                yield _SqliteTx(db, str(self.path))
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise _translate(e, str(self.path)) from e

    @contextmanager
    def _open_read(self) -> Iterator[Tx]:
        db = self._reader()
        try:
            db.execute("BEGIN")  # deferred: one snapshot for every statement of the block
        except sqlite3.Error as e:
            raise _translate(e, str(self.path)) from e
        try:
            yield _SqliteTx(db, str(self.path))
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the whole file (``VACUUM INTO``), taken while others keep reading."""
        with self._wlock:
            try:
                self._writer.execute("VACUUM INTO ?", (str(target),))
            except sqlite3.Error as e:
                raise _translate(e, str(self.path)) from e

    def close(self) -> None:
        with self._wlock, self._rlock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            for db in self._readers:
                db.close()
            self._readers.clear()
