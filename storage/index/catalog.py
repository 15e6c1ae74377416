"""Tokens and cameras: who may ask, and what is recorded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nvr.base.times import now_ms
from storage.errors import IndexError_
from storage.index._engine import Engine
from storage.index.cluster import sync_lease_in


class CatalogTables:
    """The ``tokens`` and ``cameras`` tables (a part of :class:`storage.index.Index`)."""

    _engine: Engine

    # ------------------------------------------------------------------ tokens

    def add_token(self, *, name: str, role: str, cameras: list[str] | None, token_sha256: str) -> None:
        """Register a token by its hash; a name already used by a live token is refused."""
        with self._engine.write() as tx:
            tx.lock(f"token:{name}")
            row = tx.one("SELECT revoked_ms FROM tokens WHERE name = ?", (name,))
            if row is not None and row[0] is None:
                raise IndexError_(f"a token named {name!r} exists; revoke it first")
            tx.execute("DELETE FROM tokens WHERE name = ?", (name,))
            tx.execute(
                "INSERT INTO tokens (name, role, cameras, token_sha256, created_ms) VALUES (?, ?, ?, ?, ?)",
                (name, role, json.dumps(cameras) if cameras is not None else None, token_sha256, now_ms()),
            )

    def revoke_token(self, name: str) -> bool:
        with self._engine.write() as tx:
            return tx.execute("UPDATE tokens SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL",
                              (now_ms(), name)) > 0

    def token_by_hash(self, token_sha256: str) -> tuple[str, str, list[str] | None, int | None] | None:
        """(name, role, cameras, revoked_ms) of the token with this hash."""
        row = self._engine.one("SELECT name, role, cameras, revoked_ms FROM tokens WHERE token_sha256 = ?",
                               (token_sha256,))
        if row is None:
            return None
        name, role, cams, revoked = row
        return name, role, json.loads(cams) if cams is not None else None, revoked

    def token_by_name(self, name: str) -> tuple[str, str, list[str] | None, int | None] | None:
        """(name, role, cameras, revoked_ms) of the token called ``name``."""
        row = self._engine.one("SELECT name, role, cameras, revoked_ms FROM tokens WHERE name = ?", (name,))
        if row is None:
            return None
        return row[0], row[1], json.loads(row[2]) if row[2] is not None else None, row[3]

    def tokens(self) -> list[tuple[str, str, list[str] | None, int, int | None]]:
        rows = self._engine.all("SELECT name, role, cameras, created_ms, revoked_ms FROM tokens ORDER BY name")
        return [(n, r, json.loads(c) if c is not None else None, cr, rv) for n, r, c, cr, rv in rows]

    # ------------------------------------------------------------------ cameras

    def cameras(self, *, include_deleted: bool = False) -> list[tuple[str, dict[str, Any], str, str | None, int | None]]:
        """(id, config, source, config_hash, deleted_ms) of registered cameras."""
        sql = "SELECT id, config, source, config_hash, deleted_ms FROM cameras"
        if not include_deleted:
            sql += " WHERE deleted_ms IS NULL"
        return [(i, json.loads(c), s, h, d) for i, c, s, h, d in self._engine.all(sql + " ORDER BY id")]

    def put_camera(self, camera_id: str, config: Mapping[str, Any], *, source: str, config_hash: str | None = None) -> None:
        """Insert or replace a camera's registration (undeleting it)."""
        now = now_ms()
        with self._engine.write() as tx:
            tx.execute(
                "INSERT INTO cameras (id, config, source, config_hash, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET config = excluded.config, "
                "source = excluded.source, config_hash = COALESCE(excluded.config_hash, cameras.config_hash), "
                "updated_ms = excluded.updated_ms, deleted_ms = NULL",
                (camera_id, json.dumps(dict(config), sort_keys=True), source, config_hash, now, now),
            )
            sync_lease_in(tx, camera_id, config)

    def delete_camera(self, camera_id: str) -> bool:
        now = now_ms()
        with self._engine.write() as tx:
            deleted = tx.execute("UPDATE cameras SET deleted_ms = ?, updated_ms = ? WHERE id = ? AND deleted_ms IS NULL",
                                 (now, now, camera_id)) > 0
            if deleted:
                sync_lease_in(tx, camera_id, None)
            return deleted
