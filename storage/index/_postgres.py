"""The shared backend: PostgreSQL 15+ through psycopg 3 and a connection pool.

Several processes (servers on several nodes, the CLI, ``nvr reindex``) write
the same database, so nothing here relies on an in-process lock: a chain is
extended under a transaction-scoped advisory lock named after it, and the
unique keys (``(camera, seq)``, object keys, ids) refuse what slips past.

The password never sits in the URL that is logged: it comes from the URL, the
environment (``NVR_INDEX_PASSWORD``) or a file (``[index] password_file``) and
goes to libpq as a keyword, never into a message (:meth:`describe`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from nvr.base.redact import redact_url
from storage.errors import IndexConflict, IndexError_, IndexMisconfigured, IndexUnavailable
from storage.index._engine import Engine, Row, Tx

try:  # an optional dependency for a single node; the error says what to install
    import psycopg
    import psycopg.errors
    import psycopg_pool
except ImportError:  # pragma: no cover - the test extras install it
    psycopg = None  # type: ignore[assignment]

log = logging.getLogger("nvr.index")

POOL_SIZE = 8
# Connections that hold session locks (a chain's writer from its head read through the PUT to the insert):
# as many as a node writes chains at once, which its S3 pool bounds.
HOLD_POOL_SIZE = 32
CONNECT_TIMEOUT_S = 10.0
# A statement that runs longer is cancelled: nothing nvr asks should, and a hung one would hold a pool slot.
STATEMENT_TIMEOUT_MS = 30_000
# A session that sits in an open transaction this long is ended by the server: a node whose network died
# mid-transaction would otherwise hold its locks (the audit log's, a chain's) for every node, for ever.
IDLE_IN_TRANSACTION_MS = 5_000

_PLACEHOLDER = re.compile(r"'[^']*'|\?|%")


def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` doubled); quoted strings untouched."""
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        return "%s" if tok == "?" else tok.replace("%", "%%")
    return _PLACEHOLDER.sub(sub, sql)


def _translate(e: Exception, where: str) -> IndexError_:
    if isinstance(e, psycopg.errors.UniqueViolation | psycopg.errors.ForeignKeyViolation):
        return IndexConflict(f"the index refused a write: {e.diag.message_primary or e}")
    if isinstance(e, psycopg.OperationalError | psycopg_pool.PoolTimeout | psycopg.errors.QueryCanceled
                  | psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
        return IndexUnavailable(f"the index is unavailable: {e}")
    return IndexError_(f"the index {where} failed: {e}")


class _PgTx(Tx):
    dialect = "postgresql"

    def __init__(self, conn: Any, where: str):
        self._conn, self._where = conn, where

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        try:
            # Always a tuple, even empty: psycopg then always reads the placeholders, so ``%%`` always means ``%``.
            return self._conn.execute(to_pyformat(sql), tuple(args))
        except psycopg.Error as e:
            raise _translate(e, self._where) from e

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._run(sql, args).rowcount

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return self._run(sql, args).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, args).fetchall()

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        try:
            with self._conn.cursor() as cur:
                cur.executemany(to_pyformat(sql), rows)
        except psycopg.Error as e:
            raise _translate(e, self._where) from e

    def stream(self, sql: str, args: Sequence[Any] = (), size: int = 5000) -> Iterator[list[Row]]:
        try:
            with self._conn.cursor(name="nvr_stream") as cur:  # server-side: the rows stay on the server
                cur.execute(to_pyformat(sql), tuple(args))
                while batch := cur.fetchmany(size):
                    yield batch
        except psycopg.Error as e:
            raise _translate(e, self._where) from e

    def lock(self, name: str) -> None:
        self._run("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))



class PostgresEngine(Engine):
    """``postgresql://user@host:port/db``: one index for a cluster of nodes."""

    dialect = "postgresql"

    def __init__(self, url: str, *, password: str | None = None, pool_size: int = POOL_SIZE):
        super().__init__()
        if psycopg is None:
            raise IndexMisconfigured("[index] url names PostgreSQL, but psycopg is not installed "
                                     "(pip install 'psycopg[binary,pool]')")
        self.url = url
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise IndexMisconfigured(f"[index] url {redact_url(url)} is not a PostgreSQL URL: {e}") from e
        # A URL without a password is shown as it is (the config refuses one with a password).
        self._where = redact_url(url) if psycopg.conninfo.conninfo_to_dict(url).get("password") else url
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S),
                                  "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                                             f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                                  "application_name": "nvr"}
        if password is not None:
            kwargs["password"] = password
        self._kwargs = kwargs
        # check: a connection the server dropped (restarted, failed over) is replaced before it is handed out,
        # so an outage ends with the server's return rather than with one failed call per pooled connection.
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=kwargs,
                                                 open=False, timeout=CONNECT_TIMEOUT_S, name="nvr-index",
                                                 check=psycopg_pool.ConnectionPool.check_connection)
        self._holds = psycopg_pool.ConnectionPool(url, min_size=0, max_size=HOLD_POOL_SIZE, kwargs=kwargs,
                                                  open=False, timeout=CONNECT_TIMEOUT_S, name="nvr-index-holds",
                                                  check=psycopg_pool.ConnectionPool.check_connection)
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self._holds.open(wait=False)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            self._holds.close()
            raise IndexUnavailable(f"the index {self._where} does not answer within {CONNECT_TIMEOUT_S:g} s "
                                   "(is the server up, and are the user and password right?)") from e

    def describe(self) -> str:
        return self._where

    @contextmanager
    def _open(self) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _PgTx(conn, self._where)
        except psycopg.Error as e:
            raise _translate(e, self._where) from e
        except psycopg_pool.PoolTimeout as e:
            raise _translate(e, self._where) from e

    _open_write = _open
    _open_read = _open

    @contextmanager
    def hold(self, name: str, *, wait: bool = True, lapse_s: float | None = None,
             keepalive: bool = False) -> Iterator[bool]:
        # A connection lost while held loses the lock with it; the writes it guarded still check the chain
        # head in their own transaction, so the worst is a refused insert, never a fork.
        try:
            with self._holds.connection() as conn:
                if lapse_s is not None:  # the server ends the session (and the lock) once it asks nothing that long
                    conn.execute("SELECT set_config('idle_session_timeout', %s, false)", (f"{round(lapse_s * 1000)}",))
                fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
                got = conn.execute(f"SELECT {fn}(hashtextextended(%s, 1))", (name,)).fetchone()
                held = wait or bool(got and got[0])
                pinger = _Pinger(conn, name, lapse_s / 3) if keepalive and held and lapse_s is not None else None
                try:
                    yield held
                finally:
                    if pinger is not None:
                        pinger.stop()
                    if not conn.closed:
                        with contextlib.suppress(psycopg.Error):
                            if held:
                                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 1))", (name,))
                            if lapse_s is not None:
                                conn.execute("SELECT set_config('idle_session_timeout', '0', false)")
        except psycopg.Error as e:
            raise _translate(e, self._where) from e
        except psycopg_pool.PoolTimeout as e:
            raise _translate(e, self._where) from e

    def listen(self, channel: str, on_notify: Callable[[str], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, **self._kwargs) as conn:
                    conn.execute(f"LISTEN {channel}")
                    on_notify("")  # (re)connected: whatever was said meanwhile was missed, so look now
                    while not stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            on_notify(note.payload)
            except psycopg.Error:
                stop.wait(2.0)  # the server is away; the node's heartbeat says so, this only retries

    def close(self) -> None:
        self._holds.close()
        self._pool.close()


class _Pinger:
    """Asks the server something every ``period`` s on a connection holding a lock with a lapse, from a
    thread of its own: the holder keeps its lock however long its work runs, and loses it ``lapse_s``
    after it is cut off from the server (the server ends the silent session)."""

    def __init__(self, conn: Any, name: str, period: float):
        self._conn, self._name, self._period = conn, name, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nvr-hold-ping:{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error as e:
                # The lock goes with the session; the writes it guarded check the index themselves.
                log.error("lost the index lock %s: its connection failed (%s)", self._name, type(e).__name__)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._period + 1.0)
