"""The custody HTTP handlers (nvr.api.custody) over the custody stage: roles, camera scope, audit."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from types import SimpleNamespace

import pytest

from nvr.base.times import ms_to_rfc3339
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import trusted_keys
from nvr.custody.exports import ExportService
from tests.api.support import parts_services, served_api
from tests.custody.conftest import T0

pytestmark = pytest.mark.integration


async def test_custody_routes_roles_scope_and_audit(custody, tmp_path):
    await custody.record("cam", range(3))
    await custody.record("other", range(1))
    index = custody.index
    base = parts_services(custody.parts, checkpoints=custody.writer,
                          cameras=SimpleNamespace(get=lambda cid: object() if cid in ("cam", "other") else None))
    exports = ExportService(store=custody.store, index=index, keyring=custody.keyring, node_id="test",
                            audit=base.audit, directory=tmp_path / "exports", checkpoints=custody.writer)
    await exports.start()
    rng = {"start": ms_to_rfc3339(T0), "end": ms_to_rfc3339(T0 + 6000)}
    try:
        async with served_api(replace(base, exports=exports), scoped={"scoped": ["other"]}) as api:
            async def call(method, path, who, **kw):
                async with await api.request(method, path, who, **kw) as r:
                    return r.status, (await r.json(content_type=None) if r.content_type.endswith("json")
                                      else await r.read())

            status, keys = await call("GET", "/api/v1/keys", "viewer")
            assert status == 200 and [k["key_id"] for k in keys["keys"]] == [custody.keyring.signing_key.key_id]
            assert keys["keys"][0]["current"] and keys["keys"][0]["public_key_pem"].startswith("-----BEGIN PUBLIC")

            assert (await call("POST", "/api/v1/verify", "viewer", json={"camera": "cam", **rng}))[0] == 403
            status, report = await call("POST", "/api/v1/verify", "evidence", json={"camera": "cam", **rng})
            assert status == 200 and report["verdict"] == "ok", report  # the route anchored fresh footage first
            status, one = await call("GET", "/api/v1/segments/cam:1/verify", "evidence")
            assert status == 200 and [s["status"] for s in one["segments"]] == ["ok"]
            assert (await call("POST", "/api/v1/verify", "scoped", json={"camera": "cam", **rng}))[0] == 404
            assert (await call("GET", "/api/v1/segments/cam:1/verify", "scoped"))[0] == 404
            status, bad = await call("POST", "/api/v1/verify", "evidence", json={"camera": "cam", "colour": 1, **rng})
            assert status == 400 and "unknown key 'colour'" in bad["detail"]
            status, big = await call("POST", "/api/v1/verify", "evidence",
                                     json={"camera": "cam", "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"})
            assert status == 413
            assert (await call("POST", "/api/v1/exports", "evidence", json={}))[0] == 400

            status, job = await call("POST", "/api/v1/exports", "evidence", json={
                "cameras": ["cam", "other"], **rng, "case_id": "K-7", "reason": "test"})
            assert status == 201 and job["state"] in ("queued", "running", "done")
            assert (await call("GET", f"/api/v1/exports/{job['id']}", "scoped"))[0] == 404  # not all its cameras
            done = await exports.wait(job["id"], timeout=60)
            assert done.state == "done", done.error
            status, got = await call("GET", f"/api/v1/exports/{job['id']}", "evidence")
            assert got["state"] == "done" and got["bundle_url"].endswith("/bundle")
            status, body = await call("GET", f"/api/v1/exports/{job['id']}/bundle", "evidence")
            assert status == 200 and hashlib.sha256(body).hexdigest() == got["sha256"]
            (tmp_path / "dl.zip").write_bytes(body)
            assert verify_bundle(tmp_path / "dl.zip", trusted=trusted_keys(custody.keyring)).ok
            assert (await call("GET", "/api/v1/exports/exp-0000000000000000", "evidence"))[0] == 404
    finally:
        await exports.stop()
    actions = [(e.action, e.actor) for e in index.audit_entries() if e.action.startswith(("verify", "export"))]
    assert ("verify", "token:evidence") in actions and ("export.download", "token:evidence") in actions
    assert ("export.create", "token:evidence") in actions
