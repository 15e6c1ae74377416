"""Console users and their sessions: who logs in, and what a session cookie stands for.

A password is stored only as its Argon2id hash (made by the API layer); a
session only as the SHA-256 of its id, so neither a copy of the index nor a
look at its rows lets anyone log in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nvr.base.times import now_ms
from storage.errors import IndexError_
from storage.index._engine import Engine


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    cameras: list[str] | None  # None: every camera
    password_hash: str
    created_ms: int
    updated_ms: int
    disabled_ms: int | None


@dataclass(frozen=True)
class SessionRow:
    id_sha256: str
    user: str
    csrf: str
    address: str
    created_ms: int
    seen_ms: int
    expires_ms: int  # the absolute end; the idle end is seen_ms + the configured idle time
    revoked_ms: int | None


_USER = "name, role, cameras, password_hash, created_ms, updated_ms, disabled_ms"
_SESSION = "id_sha256, user_name, csrf, address, created_ms, seen_ms, expires_ms, revoked_ms"


def _user(row) -> UserRow:
    return UserRow(row[0], row[1], json.loads(row[2]) if row[2] is not None else None, *row[3:])


class PeopleTables:
    """The ``users`` and ``sessions`` tables (``index.people``)."""

    def __init__(self, engine: Engine):
        self._engine = engine

    # ------------------------------------------------------------------ users

    def add_user(self, *, name: str, role: str, cameras: list[str] | None, password_hash: str) -> UserRow:
        """A new user; a name taken (even by a disabled user) is refused."""
        now = now_ms()
        with self._engine.write() as tx:
            tx.lock(f"user:{name}")
            if tx.one("SELECT 1 FROM users WHERE name = ?", (name,)) is not None:
                raise IndexError_(f"a user named {name!r} exists")
            tx.execute(f"INSERT INTO users ({_USER}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                       (name, role, json.dumps(cameras) if cameras is not None else None, password_hash, now, now))
        return UserRow(name, role, cameras, password_hash, now, now, None)

    def user(self, name: str) -> UserRow | None:
        row = self._engine.one(f"SELECT {_USER} FROM users WHERE name = ?", (name,))
        return _user(row) if row is not None else None

    def users(self) -> list[UserRow]:
        return [_user(r) for r in self._engine.all(f"SELECT {_USER} FROM users ORDER BY name")]

    def update_user(self, name: str, *, role: str | None = None, cameras: list[str] | None | bool = False,
                    password_hash: str | None = None, disabled: bool | None = None) -> UserRow | None:
        """Change what is given (``cameras=False``: unchanged; None: every camera); None for no such user.
        A new password or a disabling ends every session of the user in the same transaction."""
        with self._engine.write() as tx:
            row = tx.one(f"SELECT {_USER} FROM users WHERE name = ?", (name,))
            if row is None:
                return None
            old, now = _user(row), now_ms()
            new = UserRow(name, role or old.role, old.cameras if cameras is False else cameras,  # type: ignore[arg-type]
                          password_hash or old.password_hash, old.created_ms, now,
                          old.disabled_ms if disabled is None else (now if disabled else None))
            tx.execute("UPDATE users SET role = ?, cameras = ?, password_hash = ?, updated_ms = ?, disabled_ms = ? "
                       "WHERE name = ?", (new.role, json.dumps(new.cameras) if new.cameras is not None else None,
                                          new.password_hash, now, new.disabled_ms, name))
            if password_hash is not None or disabled or role is not None or cameras is not False:
                tx.execute("UPDATE sessions SET revoked_ms = ? WHERE user_name = ? AND revoked_ms IS NULL",
                           (now, name))
        return new

    # ------------------------------------------------------------------ sessions

    def add_session(self, *, id_sha256: str, user: str, csrf: str, address: str, expires_ms: int) -> SessionRow:
        now = now_ms()
        with self._engine.write() as tx:
            tx.execute(f"INSERT INTO sessions ({_SESSION}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                       (id_sha256, user, csrf, address, now, now, expires_ms))
            # Sessions ended long ago are kept a day for the audit's sake, then dropped.
            tx.execute("DELETE FROM sessions WHERE expires_ms < ?", (now - 86_400_000,))
        return SessionRow(id_sha256, user, csrf, address, now, now, expires_ms, None)

    def session(self, id_sha256: str) -> SessionRow | None:
        row = self._engine.one(f"SELECT {_SESSION} FROM sessions WHERE id_sha256 = ?", (id_sha256,))
        return SessionRow(*row) if row is not None else None

    def touch_session(self, id_sha256: str, seen_ms: int) -> None:
        with self._engine.write() as tx:
            tx.execute("UPDATE sessions SET seen_ms = ? WHERE id_sha256 = ? AND seen_ms < ?", (seen_ms, id_sha256,
                                                                                              seen_ms))

    def end_session(self, id_sha256: str) -> bool:
        with self._engine.write() as tx:
            return tx.execute("UPDATE sessions SET revoked_ms = ? WHERE id_sha256 = ? AND revoked_ms IS NULL",
                              (now_ms(), id_sha256)) > 0
