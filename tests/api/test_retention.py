"""Retention rules, preview and sweeps over HTTP against a real server (``retention_api``).

The issue's scenario runs last: a one-minute ``max_age`` on a recording
camera with a hold deletes exactly the old, unheld footage.
"""

from __future__ import annotations

import asyncio

import pytest
from minio.error import S3Error

from nvr.api.app import openapi_document
from nvr.base.times import ms_to_rfc3339, now_ms
from storage.ledger import verify_chain
from tests.api.conftest import DOCK, OLD, YARD, old_rows
from tests.api.support import refused_without_change
from tests.conftest import wait_segments

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

BAD_INPUT = [
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
    ("PUT", f"/api/v1/retention/cameras/{YARD}", "admin", {"max_age": "0d"}, 400, f"cameras.{YARD}.max_age: 0 would"),
    ("PUT", f"/api/v1/retention/cameras/{YARD}", "admin", {"max_age": "1h", "keep": True}, 400, "keep: unknown key"),
    ("PUT", f"/api/v1/retention/cameras/{YARD}", "admin", {"min_age": "-1h"}, 400, "is not a duration"),
    ("PUT", "/api/v1/retention/cameras/nope", "admin", {"max_age": "1d"}, 404, "camera 'nope' does not exist"),
    ("PUT", f"/api/v1/retention/cameras/{DOCK}", "scoped-admin", {"max_age": "1d"}, 404, "does not exist"),
    ("DELETE", f"/api/v1/retention/cameras/{DOCK}", "admin", None, 404, "has no retention override"),
    ("POST", "/api/v1/retention/preview", "admin", {"rules": {"default": {"max_age": "-5m"}}}, 400,
     "rules.default.max_age"),
    ("POST", "/api/v1/retention/preview", "admin", {"rule": {}}, 400, "unknown key 'rule'"),
    ("POST", "/api/v1/retention/preview", "evidence", {}, 403, "needs the admin role"),
    ("POST", "/api/v1/retention/run", "evidence", None, 403, "needs the admin role"),
]


@pytest.mark.parametrize(("method", "path", "token", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(retention_api, method, path, token, body, status, fragment):
    await refused_without_change(retention_api, method, path, token, body, status, fragment)


async def test_rules_get_put_camera_override_and_audit(retention_api):
    api, index = retention_api, retention_api.srv.backend.index
    got = await api.json("GET", "/api/v1/retention", "evidence")
    assert got["min_age_floor"] == "1m" and got["rules"]["default"] == {"min_age": "1m"}
    assert got["effective"][YARD] == {"min_age": "1m"} and got["sweep"]["object_lock"] is True
    v0 = got["version"]

    put = await api.json("PUT", "/api/v1/retention", json={"default": {"max_age": "30d", "max_bytes": "500GiB"},
                                                           "quota_bytes": "2TiB"})
    assert put["rules"]["default"] == {"max_age": "30d", "max_bytes": "500GiB", "min_age": "1m"}
    assert put["rules"]["quota_bytes"] == "2TiB" and put["version"] == v0 + 1 and put["source"] == "api"
    assert put["changed_by"] == "token:admin"

    cam = await api.json("PUT", f"/api/v1/retention/cameras/{YARD}", json={"max_age": "7d"})
    assert cam["rule"] == {"max_age": "1w"} and cam["effective"] == {"max_age": "1w", "max_bytes": "500GiB",
                                                                     "min_age": "1m"}
    scoped = await api.json("GET", "/api/v1/retention", "scoped-admin")
    assert set(scoped["effective"]) == {YARD}
    assert (await api.request("DELETE", f"/api/v1/retention/cameras/{YARD}")).status == 204
    assert (await api.request("DELETE", f"/api/v1/retention/cameras/{YARD}")).status == 404
    # Back to "keep everything" for the rest of the package.
    final = await api.json("PUT", "/api/v1/retention", json={})
    assert final["rules"] == {"default": {"min_age": "1m"}, "cameras": {}, "high_watermark": 0.9,
                              "low_watermark": 0.8}

    updates = index.audit_entries(action="retention.rules.update", actor="token:admin")
    assert updates[0].detail["old"]["default"] == {"min_age": "1m"}
    assert updates[0].detail["new"]["default"]["max_age"] == "30d" and updates[-1].detail["new"] == final["rules"]
    cams = index.audit_entries(action="retention.rules.camera", target=YARD)
    assert [(e.detail["old"], e.detail["new"]) for e in cams] == [(None, {"max_age": "1w"}), ({"max_age": "1w"}, None)]


async def test_preview_reports_what_would_go_and_deletes_nothing(retention_api):
    api, index = retention_api, retention_api.srv.backend.index
    rows = old_rows(api)
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "p", "cameras": [YARD], "start": ms_to_rfc3339(rows[0].start_ms),
        "end": ms_to_rfc3339(rows[2].end_ms), "reason": "preview"})
    before = [(r.id, r.state) for r in index.segments(YARD)]
    objects = api.srv.backend.store.client.list_objects
    bucket = api.srv.backend.store.bucket
    n_objects = len(list(objects(bucket, recursive=True, include_version=True)))

    pv = await api.json("POST", "/api/v1/retention/preview", json={"rules": {"default": {"max_age": "1m"}}})
    cam = pv["cameras"][YARD]
    assert cam["delete_count"] >= OLD - 3 and cam["held_count"] == 3  # kept only because of the hold
    assert cam["held_bytes"] == sum(r.object_size for r in rows[:3])
    assert cam["oldest"] == ms_to_rfc3339(rows[3].start_ms) and cam["rules"] == {"max_age": cam["delete_count"]}
    assert cam["locked_count"] >= 1  # live segments: GOVERNANCE retention still running
    assert pv["rules"]["default"] == {"max_age": "1m", "min_age": "1m"}
    current = await api.json("POST", "/api/v1/retention/preview", json={})  # the rules in force keep everything
    assert current["delete_count"] == 0

    assert [(r.id, r.state) for r in index.segments(YARD)][:len(before)] == before
    assert len(list(objects(bucket, recursive=True, include_version=True))) >= n_objects
    assert index.audit_entries(action="retention.sweep") == []
    assert (await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=done", "evidence")).status == 204


async def test_openapi_documents_the_retention_routes(retention_api):
    doc = openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.resource.canonical) for r in retention_api.srv.app.router.routes() if r.method != "HEAD"}
    assert documented == served
    assert ("PUT", "/api/v1/retention") in documented and ("DELETE", "/api/v1/holds/{id}") in documented
    assert doc["paths"]["/api/v1/holds"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HoldCreate"}


# ---------------------------------------------------------------------- the scenario (last: it deletes)


async def test_one_minute_max_age_on_a_recording_camera_with_a_hold(retention_api):
    api = retention_api
    srv, store, index = api.srv, api.srv.backend.store, api.srv.backend.index
    rows = old_rows(api)
    held = rows[5:9]
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "2026-0099", "cameras": [YARD], "start": ms_to_rfc3339(held[0].start_ms),
        "end": ms_to_rfc3339(held[-1].end_ms), "reason": "hit and run"})
    assert hold["legal_holds"]["set"] == len(held)
    await api.json("PUT", "/api/v1/retention", json={"default": {"max_age": "1m", "min_age": "1m"}})
    live_before = len(index.segments(YARD)) - OLD
    await wait_segments(srv, YARD, OLD + live_before + 1, timeout=60)  # still recording while rules change

    report = await api.json("POST", "/api/v1/retention/run")
    started = now_ms() - 60_000  # conservative: the run started before this
    held_ids = {r.id for r in held}
    after = {r.id: r for r in index.segments(YARD)}
    for r in rows:
        assert after[r.id].state == ("stored" if r.id in held_ids else "deleted"), r.id
    live = [r for r in after.values() if r.id not in {x.id for x in rows}]
    assert live and all(r.state == "stored" for r in live if r.end_ms > started)  # recent footage stays
    assert any(r.state == "stored" for r in live)
    assert report["failed"] == [] and report["pending_left"] == 0

    # Tombstones: one per deleted segment, naming the rule and the segment's record; the chain still verifies.
    stones = {t_["segment_seq"]: t_ for t_ in index.ledger_records(YARD) if t_["type"] == "tombstone"}
    deleted = [r for r in after.values() if r.state == "deleted"]
    assert sorted(stones) == sorted(r.seq for r in deleted)
    for r in deleted:
        assert stones[r.seq]["segment_record"] == r.record_hash and stones[r.seq]["rule"] == "max_age"
        assert store.stat(r.object_key, r.version_id) is None
    assert verify_chain(YARD, index.ledger_records(YARD)) == []
    # The timeline says where footage was deleted (a gap of recorded footage, not a hole nobody explains).
    q = {"start": ms_to_rfc3339(rows[0].start_ms), "end": ms_to_rfc3339(rows[-1].end_ms)}
    tl = await api.json("GET", f"/api/v1/cameras/{YARD}/timeline", "viewer", params=q)
    assert [(d["start"], d["end"]) for d in tl["deleted"]] == [
        (ms_to_rfc3339(rows[0].start_ms), ms_to_rfc3339(rows[4].end_ms)),
        (ms_to_rfc3339(rows[9].start_ms), ms_to_rfc3339(rows[-1].end_ms))]
    assert [(r["start"], r["end"]) for r in tl["recorded"]] == [
        (ms_to_rfc3339(held[0].start_ms), ms_to_rfc3339(held[-1].end_ms))]

    # Held objects carry the S3 legal hold; S3 itself refuses to delete them.
    for r in held:
        assert store.stat(r.object_key, r.version_id).legal_hold
        with pytest.raises(S3Error) as err:
            await asyncio.to_thread(store.client.remove_object, store.bucket, r.object_key, version_id=r.version_id)
        assert err.value.code == "AccessDenied"
    # Recording went on: the ingest lane is healthy and new segments still arrive after the tombstones.
    n = len(index.segments(YARD))
    await wait_segments(srv, YARD, n + 1, timeout=60)
    assert srv.ingest.lane_errors == {}
    # Every sweep is audited with its counts per camera (a scheduled one may have run too).
    sweeps = index.audit_entries(action="retention.sweep")
    assert sum(e.detail["cameras"].get(YARD, {}).get("segments", 0) for e in sweeps) == len(deleted)
    assert sweeps[-1].detail["run"] == report["run"]
    assert index.audit_entries(action="retention.run")[-1].actor == "token:admin"
    status = await api.json("GET", "/api/v1/retention", "evidence")
    assert status["sweep"]["last_run"]["run"] == report["run"] and status["sweep"]["pending"] == 0
    await api.json("PUT", "/api/v1/retention", json={})
