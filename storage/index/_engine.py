"""What the table modules talk to: an engine that opens read and write transactions, on either backend.

The table modules write each statement once, with ``?`` placeholders and SQL
both backends accept; what differs (DDL types, locks, how a database error
reads) is the engine's. No module outside ``storage/index`` sees an engine, a
transaction or a connection.

A thread that holds a write transaction and reads goes through that
transaction, so a method called inside another's write sees its rows (the
sweep reads the chain head it has just extended).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Row = tuple[Any, ...]


class Tx:
    """One open transaction: statements, rows, and a named lock held to its end."""

    dialect: str

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        raise NotImplementedError

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def stream(self, sql: str, args: Sequence[Any] = (), size: int = 5000) -> Iterator[list[Row]]:
        """The rows of one read, ``size`` at a time (a whole table without holding it in memory)."""
        raise NotImplementedError

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.one(sql, args)
        return row[0] if row is not None else None

    def script(self, sql: str) -> None:
        """Several statements separated by ``;`` at a line's end (migrations only)."""
        for stmt in (s.strip() for s in sql.split(";\n")):
            if stmt:
                self.execute(stmt)

    def lock(self, name: str) -> None:
        """Serialise writers that take the same ``name`` until this transaction ends.

        What makes "read the head, append after it" safe when several processes
        write: on SQLite every write transaction is already exclusive; on
        PostgreSQL it is a transaction-scoped advisory lock.
        """


class Engine:
    """A database the index opens; subclasses are SQLite and PostgreSQL."""

    dialect: str

    def __init__(self) -> None:
        self._local = threading.local()

    def describe(self) -> str:
        """Where the index is, for messages: never a password."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _open_write(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _open_read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, committed when the block ends, rolled back when it raises (re-entrant)."""
        held = getattr(self._local, "tx", None)
        if held is not None:
            yield held
            return
        with self._open_write() as tx:
            self._local.tx = tx
            try:
                yield tx
            finally:
                self._local.tx = None

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read: one consistent snapshot for the block, never waiting for a writer."""
        held = getattr(self._local, "tx", None)
        if held is not None:
            yield held
            return
        with self._open_read() as tx:
            yield tx

    @contextmanager
    def hold(self, name: str, *, wait: bool = True, lapse_s: float | None = None,
             keepalive: bool = False) -> Iterator[bool]:
        """A lock named ``name`` held across transactions (and across work between them) until the block ends.

        Yields False when ``wait`` is False and another holder has it. On PostgreSQL a
        session advisory lock on a connection of its own, so processes on several nodes
        exclude each other; with ``lapse_s`` the server ends that session, and the lock, when
        it has asked nothing for that long (a holder cut off from the server can't keep the
        others out); with ``keepalive`` too, a thread asks every ``lapse_s`` / 3 while the
        block runs, so only a holder cut off loses it. On SQLite (one node) nothing: its
        callers' in-process locks do.
        """
        yield True

    def listen(self, channel: str, on_notify: Callable[[str], None], stop: threading.Event) -> None:
        """Call ``on_notify(payload)`` for each notification on ``channel`` until ``stop`` is set (blocking).

        PostgreSQL's LISTEN on a connection of its own; SQLite has no other process to hear from.
        """
        stop.wait()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read."""
        with self.read() as tx:
            return tx.all(sql, args)

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self.read() as tx:
            return tx.one(sql, args)

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self.read() as tx:
            return tx.scalar(sql, args)
