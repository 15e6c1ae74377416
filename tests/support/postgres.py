"""A PostgreSQL server of the tests' own: Debian's binaries, ``initdb`` + ``pg_ctl`` on a free port in a temp dir.

One server per session, a fresh database per test (``CREATE DATABASE``, a
few tens of ms). Password authentication (SCRAM) on 127.0.0.1 only, as in
production: the password reaches nvr through ``[index] password_file``,
never the URL. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` user the Debian package creates. Durability is off
(``fsync``): these tests kill nvr, never the database.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "nvr"
_db_ids = itertools.count(1)


def binaries() -> Path | None:
    """The newest PostgreSQL 15+ server binaries of the Debian packages, or None."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            major = int(Path(d).parent.name)
        except ValueError:
            continue
        if major >= 15 and (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            found.append((major, Path(d)))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: ``url(db)`` for a database, ``password_file`` for nvr."""

    bindir: Path
    root: Path
    port: int
    password_file: Path
    _as: list[str]
    options: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    def admin(self):
        import psycopg

        return psycopg.connect(self.url(), password=self.password, autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database (named ``name``, else a new name); its URL."""
        name = name or f"t{os.getpid()}_{next(_db_ids)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pause(self) -> None:
        """Stop the server (a database host that goes away); :meth:`resume` starts it again, data kept."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)

    def resume(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o",
                  self.options, "-w", "-t", "60", "start", timeout=90)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start(bindir: Path, *, durable: bool = False, root: Path | None = None,
          settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb + pg_ctl start in a new temp dir (or ``root``), on a free port of 127.0.0.1.

    ``durable``: PostgreSQL's own defaults (fsync, synchronous commit), for benchmarks; the tests
    don't need them. ``settings``: more ``-c`` options.
    """
    root = Path(tempfile.mkdtemp(prefix="nvr-pg-", dir=root))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    pwfile = root / "password"
    pwfile.write_text(secrets.token_urlsafe(18) + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    pwfile.chmod(0o600)
    port = _free_port()
    server = PostgresServer(bindir, root, port, pwfile, as_user)
    server._run(str(bindir / "initdb"), "-D", str(server.data), "-U", USER, "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync", timeout=120)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB"
    for key, value in (settings or {}).items():
        opts += f" -c {key}={value}"
    server.options = opts
    server.resume()
    return server
