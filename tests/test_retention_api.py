"""Retention and holds over HTTP against a real server: a recording RTSP camera, real S3 with object lock.

The camera's chain starts with two hours of back-dated segments (ingested
before the server starts, so nothing waits in real time); the server then
records live segments on top of them. ``retention.min_age`` is one minute, so
live segments are object-locked (GOVERNANCE) and young for the whole module.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from minio.error import S3Error

from nvr.api.auth import create_token
from nvr.api.routes import all_routes, build_app
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.ingest.pipeline import Ingestor
from nvr.server.app import NvrServer
from retention.service import RetentionService
from storage.index import Index
from storage.keyring import Keyring
from storage.ledger import verify_chain
from storage.objectstore import ObjectStore
from storage.spool import ClosedSegment, Spool
from tests.conftest import make_config, wait_segments

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

A, B = "yard", "dock"  # A records; B is registered but disabled
OLD = 20  # back-dated segments of A
H = 3_600_000


@dataclass
class Api:
    srv: NvrServer
    svc: RetentionService
    base: str
    http: aiohttp.ClientSession
    tokens: dict[str, str]

    async def request(self, method: str, path: str, token: str | None = "admin", **kw) -> aiohttp.ClientResponse:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return await self.http.request(method, self.base + path, headers=headers, **kw)

    async def json(self, method: str, path: str, token: str = "admin", status: int = 200, **kw):
        resp = await self.request(method, path, token, **kw)
        body = await resp.json(content_type=None) if resp.status != 204 else None
        assert resp.status == status, body
        return body

    @property
    def index(self) -> Index:
        return self.srv.backend.index


def prefill(cfg, start_ms: int) -> None:
    """Back-dated segments of camera A, in the server's own index, keyring and bucket (no object-lock period)."""
    st = cfg.storage
    store = ObjectStore(endpoint=st.endpoint, access_key=st.access_key, secret_key=st.secret_key, bucket=st.bucket,
                        object_lock=True)
    store.ensure_bucket()
    index = Index(cfg.index_path)
    spool = Spool(cfg.spool_dir)
    ing = Ingestor(store=store, index=index, keyring=Keyring.open(cfg.keyring_dir), spool=spool, node_id="prefill")
    run = f"r{start_ms:013d}"

    async def go() -> None:
        for n in range(OLD):
            seg = ClosedSegment(camera=A, file=f"{run}-{n:06d}.mp4", run=run, n=n, start_ms=start_ms + n * 2000,
                                end_ms=start_ms + (n + 1) * 2000, partial=False, closed_ms=start_ms + (n + 1) * 2000)
            spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
            spool.path(seg).write_bytes(os.urandom(4000))
            spool.write_ticket(seg)
            await ing.ingest(seg)

    try:
        asyncio.run(go())
        # Old footage was ingested long ago: its object-lock period (none here) is over, as the sweep reckons it.
        with index.transaction() as db:
            db.execute("UPDATE segments SET ingested_ms = end_ms + 1000 WHERE camera = ?", (A,))
    finally:
        index.close()
        store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retention-api")
    cfg = make_config(tmp, s3, f"ret-api-{os.getpid()}", [
        {"id": A, "url": rtsp.url("cam3")}, {"id": B, "url": rtsp.url("cam4"), "enabled": False}],
        storage={"object_lock": True}, retention={"min_age": "1m"})
    await asyncio.to_thread(prefill, cfg, now_ms() - 2 * H)
    async with NvrServer(cfg) as srv:  # the server opens, starts and stops its retention service
        index = srv.backend.index
        tokens = {role: create_token(index, name=role, role=role, cameras=None)
                  for role in ("viewer", "evidence", "admin")}
        tokens["scoped-admin"] = create_token(index, name="scoped-admin", role="admin", cameras=[A])
        tokens["scoped-evidence"] = create_token(index, name="scoped-evidence", role="evidence", cameras=[B])
        await wait_segments(srv, A, OLD + 3, timeout=90)
        async with aiohttp.ClientSession() as http:
            yield Api(srv, srv.retention, f"http://127.0.0.1:{srv.http_port}", http, tokens)


def old_rows(api: Api):
    return [r for r in api.index.segments(A) if r.end_ms < now_ms() - H]


def t(ms: int) -> str:
    return ms_to_rfc3339(ms)


# ---------------------------------------------------------------------- bad input

DAY = "2026-11-29T10:00:00Z"
HOLD = {"case_id": "c-1", "cameras": [A], "start": DAY, "reason": "incident"}

BAD_INPUT = [
    # rules
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": "-1d"}}, 400, "default.max_age: '-1d' is not a duration"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": "0d"}}, 400, "0 would delete everything"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": "3 fortnights"}}, 400, "is not a duration"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": 30}}, 400, "units are explicit"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_bytes": "5 parsecs"}}, 400, "is not a size"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_bytes": "0GiB"}}, 400, "0 would delete everything"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"min_age": "30s"}}, 400, "default.min_age: must be at least 1m"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": "30s"}}, 400, "is below min_age"),
    ("PUT", "/api/v1/retention", "admin", {"default": {"max_age": None}}, 400, "null is not a value"),
    ("PUT", "/api/v1/retention", "admin", {"cameras": {"nope": {"max_age": "1d"}}}, 404, "camera 'nope' does not exist"),
    ("PUT", "/api/v1/retention", "admin", {"cameras": {"Bad Id": {"max_age": "1d"}}}, 400, "not a camera id"),
    ("PUT", "/api/v1/retention", "admin", {"colour": "red"}, 400, "colour: unknown key"),
    ("PUT", "/api/v1/retention", "admin", {"quota_bytes": "1TiB", "low_watermark": 0.95}, 400,
     "must be below high_watermark"),
    ("PUT", "/api/v1/retention", "admin", {"quota_bytes": "-5GiB"}, 400, "is not a size"),
    ("PUT", "/api/v1/retention", "evidence", {}, 403, "needs the admin role"),
    ("PUT", "/api/v1/retention", "scoped-admin", {}, 403, "camera-scoped token"),
    ("PUT", "/api/v1/retention", "admin", "not json", 400, "not valid JSON"),
    ("PUT", f"/api/v1/retention/cameras/{A}", "admin", {"max_age": "0d"}, 400, f"cameras.{A}.max_age: 0 would"),
    ("PUT", f"/api/v1/retention/cameras/{A}", "admin", {"max_age": "1h", "keep": True}, 400, "keep: unknown key"),
    ("PUT", f"/api/v1/retention/cameras/{A}", "admin", {"min_age": "-1h"}, 400, "is not a duration"),
    ("PUT", "/api/v1/retention/cameras/nope", "admin", {"max_age": "1d"}, 404, "camera 'nope' does not exist"),
    ("PUT", f"/api/v1/retention/cameras/{B}", "scoped-admin", {"max_age": "1d"}, 404, "does not exist"),
    ("DELETE", f"/api/v1/retention/cameras/{B}", "admin", None, 404, "has no retention override"),
    ("POST", "/api/v1/retention/preview", "admin", {"rules": {"default": {"max_age": "-5m"}}}, 400,
     "rules.default.max_age"),
    ("POST", "/api/v1/retention/preview", "admin", {"rule": {}}, 400, "unknown key 'rule'"),
    ("POST", "/api/v1/retention/preview", "evidence", {}, 403, "needs the admin role"),
    ("POST", "/api/v1/retention/run", "evidence", None, 403, "needs the admin role"),
    # holds
    ("POST", "/api/v1/holds", "evidence", {k: v for k, v in HOLD.items() if k != "case_id"}, 400, "case_id: is required"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": []}, 400, "cameras: must be a non-empty list"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": A}, 400, "cameras: must be a non-empty list"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": ["nope"]}, 404, "camera 'nope' does not exist"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": ["Bad Id"]}, 400, "not a camera id"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": "yesterday"}, 400, "start: 'yesterday' is not an RFC 3339"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": "2026-11-29T10:00:00"}, 400, "no UTC offset"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "end": "2026-11-29T09:00:00Z"}, 400, "end: must be after start"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "end": DAY}, 400, "end: must be after start"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "expires": "2001-01-01T00:00:00Z"}, 400,
     "expires: must be in the future"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "reason": ""}, 400, "reason: must be a non-empty string"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "reason": "x" * 1001}, 400, "at most 1000 characters"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "until": DAY}, 400, "until: unknown key"),
    ("POST", "/api/v1/holds", "viewer", HOLD, 403, "needs the evidence role"),
    ("POST", "/api/v1/holds", "scoped-evidence", HOLD, 404, f"camera '{A}' does not exist"),
    ("GET", "/api/v1/holds?state=weird", "evidence", None, 400, "state must be one of"),
    ("GET", "/api/v1/holds", "viewer", None, 403, "needs the evidence role"),
    ("DELETE", "/api/v1/holds/hold-999999?reason=x", "evidence", None, 404, "hold 'hold-999999' does not exist"),
    ("DELETE", "/api/v1/holds/not-a-hold?reason=x", "evidence", None, 404, "does not exist"),
    ("DELETE", "/api/v1/holds/hold-1?reason=x&force=1", "evidence", None, 400, "unknown query parameter 'force'"),
    ("DELETE", "/api/v1/holds/hold-1?reason=x", "viewer", None, 403, "needs the evidence role"),
]


@pytest.mark.parametrize(("method", "path", "token", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, method, path, token, body, status, fragment):
    kw = {}
    if isinstance(body, str):
        kw = {"data": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kw = {"json": body}
    before = api.index.query("SELECT COUNT(*) FROM retention_holds")[0][0], api.svc.stored.version
    resp = await api.request(method, path, token, **kw)
    problem = await resp.json(content_type=None)
    assert resp.status == status, problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and fragment in problem["detail"], problem
    after = api.index.query("SELECT COUNT(*) FROM retention_holds")[0][0], api.svc.stored.version
    assert after == before  # nothing changed


# ---------------------------------------------------------------------- rules


async def test_rules_get_put_camera_override_and_audit(api):
    got = await api.json("GET", "/api/v1/retention", "evidence")
    assert got["min_age_floor"] == "1m" and got["rules"]["default"] == {"min_age": "1m"}
    assert got["effective"][A] == {"min_age": "1m"} and got["sweep"]["object_lock"] is True
    v0 = got["version"]

    put = await api.json("PUT", "/api/v1/retention", json={"default": {"max_age": "30d", "max_bytes": "500GiB"},
                                                           "quota_bytes": "2TiB"})
    assert put["rules"]["default"] == {"max_age": "30d", "max_bytes": "500GiB", "min_age": "1m"}
    assert put["rules"]["quota_bytes"] == "2TiB" and put["version"] == v0 + 1 and put["source"] == "api"
    assert put["changed_by"] == "token:admin"

    cam = await api.json("PUT", f"/api/v1/retention/cameras/{A}", json={"max_age": "7d"})
    assert cam["rule"] == {"max_age": "1w"} and cam["effective"] == {"max_age": "1w", "max_bytes": "500GiB",
                                                                     "min_age": "1m"}
    scoped = await api.json("GET", "/api/v1/retention", "scoped-admin")
    assert set(scoped["effective"]) == {A}
    assert (await api.request("DELETE", f"/api/v1/retention/cameras/{A}")).status == 204
    assert (await api.request("DELETE", f"/api/v1/retention/cameras/{A}")).status == 404
    # Back to "keep everything" for the rest of the module.
    final = await api.json("PUT", "/api/v1/retention", json={})
    assert final["rules"] == {"default": {"min_age": "1m"}, "cameras": {}, "high_watermark": 0.9,
                              "low_watermark": 0.8}

    updates = api.index.audit_entries(action="retention.rules.update", actor="token:admin")
    assert updates[0].detail["old"]["default"] == {"min_age": "1m"}
    assert updates[0].detail["new"]["default"]["max_age"] == "30d" and updates[-1].detail["new"] == final["rules"]
    cams = api.index.audit_entries(action="retention.rules.camera", target=A)
    assert [(e.detail["old"], e.detail["new"]) for e in cams] == [(None, {"max_age": "1w"}), ({"max_age": "1w"}, None)]


# ---------------------------------------------------------------------- holds


async def test_hold_place_list_release(api):
    rows = old_rows(api)
    body = {"case_id": "2026-0042", "cameras": [A, B], "start": t(rows[0].start_ms), "end": t(rows[1].end_ms),
            "reason": "assault at the gate", "expires": t(now_ms() + 86_400_000)}
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json=body)
    assert hold["state"] == "active" and hold["cameras"] == sorted([A, B])
    assert hold["legal_holds"]["enabled"] and hold["legal_holds"]["set"] == 2
    listed = await api.json("GET", "/api/v1/holds?state=active", "evidence")
    assert hold["id"] in [h["id"] for h in listed["holds"]]
    scoped = await api.json("GET", "/api/v1/holds", "scoped-evidence")  # sees it through B, only B listed
    assert [h["cameras"] for h in scoped["holds"] if h["id"] == hold["id"]] == [[B]]
    forbidden = await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=mine", "scoped-evidence")
    assert forbidden.status == 403  # it also covers A, outside that token's scope

    no_reason = await api.request("DELETE", f"/api/v1/holds/{hold['id']}", "evidence")
    assert no_reason.status == 400 and "reason" in (await no_reason.json())["detail"]
    assert (await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=case%20closed", "evidence")).status == 204
    again = await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=again", "evidence")
    assert again.status == 409
    released = await api.json("GET", "/api/v1/holds?state=released", "evidence")
    [h] = [h for h in released["holds"] if h["id"] == hold["id"]]
    assert (h["released_by"], h["release_reason"]) == ("token:evidence", "case closed")
    assert not api.srv.backend.store.stat(rows[0].object_key, rows[0].version_id).legal_hold
    acts = [(e.action, e.actor) for e in api.index.audit_entries(target=hold["id"])]
    assert acts == [("hold.place", "token:evidence"), ("hold.release", "token:evidence")]


async def test_preview_reports_what_would_go_and_deletes_nothing(api):
    rows = old_rows(api)
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "p", "cameras": [A], "start": t(rows[0].start_ms), "end": t(rows[2].end_ms), "reason": "preview"})
    before = [(r.id, r.state) for r in api.index.segments(A)]
    objects = api.srv.backend.store.client.list_objects
    bucket = api.srv.backend.store.bucket
    n_objects = len(list(objects(bucket, recursive=True, include_version=True)))

    pv = await api.json("POST", "/api/v1/retention/preview", json={"rules": {"default": {"max_age": "1m"}}})
    cam = pv["cameras"][A]
    assert cam["delete_count"] >= OLD - 3 and cam["held_count"] == 3  # kept only because of the hold
    assert cam["held_bytes"] == sum(r.object_size for r in rows[:3])
    assert cam["oldest"] == t(rows[3].start_ms) and cam["rules"] == {"max_age": cam["delete_count"]}
    assert cam["locked_count"] >= 1  # live segments: GOVERNANCE retention still running
    assert pv["rules"]["default"] == {"max_age": "1m", "min_age": "1m"}
    current = await api.json("POST", "/api/v1/retention/preview", json={})  # the rules in force keep everything
    assert current["delete_count"] == 0

    assert [(r.id, r.state) for r in api.index.segments(A)][:len(before)] == before
    assert len(list(objects(bucket, recursive=True, include_version=True))) >= n_objects
    assert api.index.audit_entries(action="retention.sweep") == []
    assert (await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=done", "evidence")).status == 204


# ---------------------------------------------------------------------- the scenario


async def test_one_minute_max_age_on_a_recording_camera_with_a_hold(api):
    srv, store = api.srv, api.srv.backend.store
    rows = old_rows(api)
    held = rows[5:9]
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "2026-0099", "cameras": [A], "start": t(held[0].start_ms), "end": t(held[-1].end_ms),
        "reason": "hit and run"})
    assert hold["legal_holds"]["set"] == len(held)
    await api.json("PUT", "/api/v1/retention", json={"default": {"max_age": "1m", "min_age": "1m"}})
    live_before = len(api.index.segments(A)) - OLD
    await wait_segments(srv, A, OLD + live_before + 1, timeout=60)  # still recording while rules change

    report = await api.json("POST", "/api/v1/retention/run")
    started = now_ms() - 60_000  # conservative: the run started before this
    held_ids = {r.id for r in held}
    after = {r.id: r for r in api.index.segments(A)}
    for r in rows:
        assert after[r.id].state == ("stored" if r.id in held_ids else "deleted"), r.id
    live = [r for r in after.values() if r.id not in {x.id for x in rows}]
    assert live and all(r.state == "stored" for r in live if r.end_ms > started)  # recent footage stays
    assert any(r.state == "stored" for r in live)
    assert report["failed"] == [] and report["pending_left"] == 0

    # Tombstones: one per deleted segment, naming the rule and the segment's record; the chain still verifies.
    stones = {t_["segment_seq"]: t_ for t_ in api.index.ledger_records(A) if t_["type"] == "tombstone"}
    deleted = [r for r in after.values() if r.state == "deleted"]
    assert sorted(stones) == sorted(r.seq for r in deleted)
    for r in deleted:
        assert stones[r.seq]["segment_record"] == r.record_hash and stones[r.seq]["rule"] == "max_age"
        assert store.stat(r.object_key, r.version_id) is None
    assert verify_chain(A, api.index.ledger_records(A)) == []

    # Held objects carry the S3 legal hold; S3 itself refuses to delete them.
    for r in held:
        assert store.stat(r.object_key, r.version_id).legal_hold
        with pytest.raises(S3Error) as err:
            await asyncio.to_thread(store.client.remove_object, store.bucket, r.object_key, version_id=r.version_id)
        assert err.value.code == "AccessDenied"
    # Recording went on: the ingest lane is healthy and new segments still arrive after the tombstones.
    n = len(api.index.segments(A))
    await wait_segments(srv, A, n + 1, timeout=60)
    assert srv.ingest.lane_errors == {}
    # Every sweep is audited with its counts per camera (a scheduled one may have run too, once wired).
    sweeps = api.index.audit_entries(action="retention.sweep")
    assert sum(e.detail["cameras"].get(A, {}).get("segments", 0) for e in sweeps) == len(deleted)
    assert sweeps[-1].detail["run"] == report["run"]
    assert api.index.audit_entries(action="retention.run")[-1].actor == "token:admin"
    status = await api.json("GET", "/api/v1/retention", "evidence")
    assert status["sweep"]["last_run"]["run"] == report["run"] and status["sweep"]["pending"] == 0
    await api.json("PUT", "/api/v1/retention", json={})


async def test_openapi_documents_the_retention_routes(api):
    from nvr.api.openapi import build_openapi

    doc = build_openapi(all_routes())
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.resource.canonical) for r in build_app(api.srv).router.routes() if r.method != "HEAD"}
    assert documented == served
    assert ("PUT", "/api/v1/retention") in documented and ("DELETE", "/api/v1/holds/{id}") in documented
    assert doc["paths"]["/api/v1/holds"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HoldCreate"}

