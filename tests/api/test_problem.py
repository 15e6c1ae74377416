"""One error model, mapped to HTTP in one place: every kind through the real HTTP stack, and real causes.

The mapping is driven by a small app whose handlers raise each kind behind
``problem_middleware``; the real causes go through ``build_app`` over real
storage: a segment whose key-encryption key is not in the keyring, and an
index that another connection keeps locked.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nvr.api.problem import STATUS, Problem, problem_middleware
from nvr.base.errors import Conflict, InvalidInput, Kind, NotFound, NvrError
from storage.errors import (
    IndexUnavailable,
    IntegrityError,
    KeyringError,
    StorageError,
    TransientStorageError,
)
from storage.keyring import Keyring
from tests.api.support import parts_services, problem_of, served_api
from tests.support.rawsql import set_busy_timeout, tampering

# name: (what the handler raises, status, kind it stands for, detail fragment, extension members)
CASES: dict[str, tuple[BaseException, int, Kind | None, str, dict[str, Any]]] = {
    "invalid": (InvalidInput("limit must be between 1 and 1000", field="limit"), 400, Kind.INVALID,
                "limit must be between", {"field": "limit"}),
    "not_found": (NotFound("camera 'gate' does not exist"), 404, Kind.NOT_FOUND,
                  "camera 'gate' does not exist (or this token may not see it)", {}),
    "conflict": (Conflict("camera 'gate' already exists"), 409, Kind.CONFLICT, "already exists", {}),
    "forbidden": (NvrError("only the node itself may do this", kind=Kind.FORBIDDEN), 403, Kind.FORBIDDEN,
                  "only the node", {}),
    "limited": (NvrError("too many exports at once", kind=Kind.LIMITED), 429, Kind.LIMITED, "too many", {}),
    "unavailable": (TransientStorageError("S3 s3.local unreachable: ConnectionRefused"), 503, Kind.UNAVAILABLE,
                    "S3 s3.local unreachable", {}),
    "refused": (StorageError("S3 s3.local: AccessDenied: no", code="AccessDenied"), 502, Kind.REFUSED,
                "AccessDenied", {"code": "AccessDenied"}),
    "data_loss": (IntegrityError("gate:1: stored object SHA-256 differs", segment="gate:1", check="object_sha256"),
                  502, Kind.DATA_LOSS, "differs", {"segment": "gate:1", "check": "object_sha256"}),
    "misconfigured": (KeyringError("key-encryption key 'k1' is not in /keys/kek; restore it from backup"), 500,
                      Kind.MISCONFIGURED, "until its operator fixes it: key-encryption key 'k1'", {}),
    "internal": (NvrError("the index contradicts itself"), 500, Kind.INTERNAL, "contradicts itself", {}),
    "index_locked": (IndexUnavailable("the index is unavailable: database is locked"), 503, Kind.UNAVAILABLE,
                     "the index is unavailable: database is locked", {}),
    "index_full": (IndexUnavailable("the index is unavailable: database or disk is full"), 503, Kind.UNAVAILABLE,
                   "the index is unavailable: database or disk is full", {}),
    "bug": (ValueError("internal detail nobody should see"), 500, None, "the error is in its log", {}),
    "http_only": (Problem(416, "Range 'bytes=9-' is outside the 5 bytes", headers={"Content-Range": "bytes */5"}),
                  416, None, "outside the 5 bytes", {}),
}


@pytest.fixture
async def raising_app():
    async def handler(request: web.Request) -> web.Response:
        raise CASES[request.match_info["case"]][0]

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/raise/{case}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(str(server.make_url(""))) as http:
        yield http
    await server.close()


def test_every_kind_has_one_status_and_a_case():
    assert set(STATUS) == set(Kind)
    assert {kind for _, _, kind, _, _ in CASES.values() if kind is not None} == set(Kind)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_kind_maps_to_its_status(raising_app, case):
    _, status, kind, fragment, extensions = CASES[case]
    async with raising_app.get(f"/raise/{case}") as resp:
        problem = await problem_of(resp, status, fragment)
        assert problem["instance"] == f"/raise/{case}"
        assert {k: problem.get(k) for k in extensions} == extensions
        assert (resp.headers.get("Retry-After") is not None) == (status == 503)
    if case == "bug":
        assert "nobody should see" not in problem["detail"]
    if case == "http_only":
        assert resp.headers["Content-Range"] == "bytes */5"


# ---------------------------------------------------------------------- real causes


@pytest.mark.integration
async def test_a_segment_whose_key_is_missing_is_a_server_problem_not_a_storage_one(storage_parts, tmp_path):
    parts = storage_parts
    [row] = await parts.put_segments("gate", 1_764_421_200_000, [0], payload=lambda n: b"\0" * 4000)
    other = Keyring.open(tmp_path / "other-keyring")  # the keyring after losing the KEK the segment names
    with pytest.raises(KeyringError):
        other.kek(row.key_id)
    async with served_api(parts_services(parts, keyring=other)) as api:
        resp = await api.get(f"/api/v1/segments/{row.id}/content", "viewer")
        problem = await problem_of(resp, 500, row.key_id)
    assert problem["title"] == "Server misconfigured"
    assert "operator" in problem["detail"] and "restore it from backup" in problem["detail"]
    assert "can't be read from storage" not in problem["detail"]
    assert parts.index.audit_entries(action="segment.verify_failed") == []  # nothing failed verification


@pytest.mark.integration
async def test_a_locked_index_is_503_not_500(storage_parts):
    parts = storage_parts
    [row] = await parts.put_segments("gate", 1_764_421_200_000, [0], payload=lambda n: b"\1" * 4000)
    if parts.index.dialect != "sqlite":
        pytest.skip("a second SQLite writer holding the file's lock")
    set_busy_timeout(parts.index, 0.1)  # give up on the lock after 0.1 s, not the index's 30 s
    async with served_api(parts_services(parts)) as api:
        other = sqlite3.connect(parts.data_dir / "index.sqlite3", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the index: the audit entry can't be written
            resp = await api.get(f"/api/v1/segments/{row.id}/content", "viewer")
            await problem_of(resp, 503, "the index is unavailable: database is locked")
            assert resp.headers["Retry-After"]
        finally:
            other.rollback()
            other.close()
        assert (await api.get(f"/api/v1/segments/{row.id}/content", "viewer")).status == 200


@pytest.mark.integration
async def test_a_segment_failing_verification_is_audited_and_502(storage_parts):
    parts = storage_parts
    [row] = await parts.put_segments("gate", 1_764_421_200_000, [0], payload=lambda n: b"\2" * 4000)
    with tampering(parts.index) as db:  # the index no longer agrees with the ledger record
        db.execute("UPDATE segments SET sha256 = ? WHERE camera = ? AND seq = ?", ("0" * 64, row.camera, row.seq))
    async with served_api(parts_services(parts)) as api:
        resp = await api.get(f"/api/v1/segments/{row.id}/content", "viewer")
        problem = await problem_of(resp, 502, f"segment {row.id} failed verification (ledger)")
    assert problem["title"] == "Integrity check failed"
    assert (problem["segment"], problem["check"]) == (row.id, "ledger")
    [entry] = parts.index.audit_entries(action="segment.verify_failed")
    assert entry.target == row.id and entry.detail["check"] == "ledger"
