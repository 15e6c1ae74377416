"""``nvr index status|migrate``: a SQLite index copied into PostgreSQL serves the same API answers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from nvr.base.times import ms_to_rfc3339
from nvr.cli.main import main as run_cli
from storage.index import Index
from tests.api.support import parts_services, served_api
from tests.conftest import make_config

pytestmark = pytest.mark.integration

T0 = 1_764_421_200_000
ROLES = ("viewer", "evidence", "admin")


async def _answers(parts, index: Index) -> dict:
    """What the API answers about the copied footage, over ``index``."""
    out = {}
    async with served_api(parts_services(replace(parts, index=index))) as api:
        out["segments"] = await api.json("GET", "/api/v1/cameras/gate/segments", "viewer")
        window = f"start={ms_to_rfc3339(T0 - 10_000)}&end={ms_to_rfc3339(T0 + 60_000)}"
        out["timeline"] = await api.json("GET", f"/api/v1/cameras/gate/timeline?{window}", "viewer")
        resp = await api.get("/api/v1/segments/gate:1/content", "viewer")
        assert resp.status == 200
        out["content"] = await resp.read()
        out["verify"] = await api.json("GET", "/api/v1/segments/gate:1/verify", "evidence")
        out["verify"].pop("checked_at")
    for role in ROLES:  # served_api made a token per role: the next serve makes its own
        index.revoke_token(role)
    return out


async def test_migrate_copies_a_sqlite_index_into_postgresql(storage_parts, index_backend, postgres, tmp_path,
                                                             capsys):
    if index_backend != "sqlite":
        pytest.skip("the source is this data dir's SQLite index")
    parts = storage_parts
    await parts.put_segments("gate", T0, [0, 1, 2], payload=lambda n: bytes([n]) * 5000)
    before = await _answers(parts, parts.index)
    make_config(tmp_path, parts.s3, parts.store.bucket, [])
    url = postgres.create_database()

    argv = ["index", "migrate", "--to", url, "--password-file", str(postgres.password_file), "--json",
            "--config", str(tmp_path / "nvr.toml")]
    assert await asyncio.to_thread(run_cli, argv) == 0
    copied = json.loads(capsys.readouterr().out)["rows"]
    assert copied["segments"] == 3 and copied["ledger"] == 3 and copied["tokens"] == 3

    again = await asyncio.to_thread(run_cli, argv)  # the target is no longer empty: refused, untouched
    assert again != 0 and "is not empty" in capsys.readouterr().err

    pg = Index(url, password_file=postgres.password_file)
    try:
        assert pg.dialect == "postgresql"
        assert pg.retention.current_rules() == parts.index.retention.current_rules()
        after = await _answers(parts, pg)
        assert after == before
        assert [e.action for e in pg.audit_entries(action="index.migrated")] == ["index.migrated"]
    finally:
        pg.close()


def test_migrate_refuses_a_url_with_a_password(tmp_path, capsys):
    code = run_cli(["index", "migrate", "--to", "postgresql://nvr:secret@db/nvr", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--to" in err and "must not carry a password" in err and "secret" not in err
