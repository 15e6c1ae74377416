"""Raw SQL on an index, for tests that tamper or look like someone with access to the database.

Product code never does this (``tests/storage/test_sql_owner.py`` checks): the
index layer owns every statement. The statements use ``?`` placeholders and
run on either backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from storage.index import Index


@contextmanager
def tampering(index: Index) -> Iterator[Any]:
    """One write transaction on ``index``'s database: ``tx.execute(sql, args)``, ``tx.all``, ``tx.one``."""
    with index._engine.write() as tx:
        yield tx


def sql_rows(index: Index, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one read statement."""
    return [tuple(r) for r in index._engine.all(sql, args)]


def set_busy_timeout(index: Index, seconds: float) -> None:
    """How long ``index``'s SQLite writer waits for another process's write lock before giving up."""
    index._engine._writer.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
