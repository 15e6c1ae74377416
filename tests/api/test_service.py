"""The service routes: the OpenAPI document (valid, and exactly what is served), metrics, health; a fuzz run."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nvr.api.app import openapi_document
from nvr.api.metrics import only_cameras

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


def served(app) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


async def test_openapi_document_is_valid():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi_document())


async def test_openapi_lists_exactly_the_served_routes(api):
    doc = await (await api.get("/api/v1/openapi.json", None)).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served(api.srv.app)
    assert doc["openapi"] == "3.1.0"
    assert doc == openapi_document()


async def test_openapi_parameters_come_from_the_route_specs(api):
    doc = openapi_document()
    segments = {p["name"]: p for p in doc["paths"]["/api/v1/cameras/{id}/segments"]["get"]["parameters"]}
    audit = {p["name"]: p for p in doc["paths"]["/api/v1/audit"]["get"]["parameters"]}
    assert segments["cursor"] == audit["cursor"]  # one cursor rule
    assert segments["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    timeline = {p["name"]: p for p in doc["paths"]["/api/v1/cameras/{id}/timeline"]["get"]["parameters"]}
    assert timeline["start"]["required"] and timeline["end"]["required"] and not segments["start"]["required"]
    release = {p["name"]: p for p in doc["paths"]["/api/v1/holds/{id}"]["delete"]["parameters"]}
    assert release["reason"]["required"] and release["id"]["schema"]["pattern"].startswith("^hold-")


async def test_metrics_and_healthz(api):
    text = await (await api.get("/metrics", "viewer")).text()
    for name in ("nvr_segments_ingested_total", "nvr_ingested_bytes_total", "nvr_ingest_latency_seconds_bucket",
                 "nvr_spool_bytes", 'nvr_cameras{state="recording"}', "nvr_http_requests_total"):
        assert name in text
    assert re.search(r"^nvr_segments_ingested_total (\d+)", text, re.M).group(1) != "0"
    health = await (await api.get("/healthz", None)).json()
    assert health == {"ok": True, "alarms": []}


CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


async def test_schemathesis_finds_the_server_conformant(api):
    # Reads only: a fuzzed camera URL would make ffmpeg dial arbitrary hosts. The bad-input tables
    # cover the bodies of the mutating routes. Statuses, media types and JSON answers must be the documented ones.
    # Live streams never end, and a fuzzer reads whole bodies: tests/live checks those routes.
    token = api.tokens["admin"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "st"), "run", f"{api.base}/api/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", ",".join(CHECKS), "--max-examples", "15",
         "--request-timeout", "30", "--include-method", "GET", "--exclude-path-regex", "/live(\\.mp4)?$"],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


async def test_a_scoped_token_gets_only_the_metric_series_of_its_cameras():
    text = "\n".join([
        "# HELP nvr_segments_ingested_total Segments", "# TYPE nvr_segments_ingested_total counter",
        "nvr_segments_ingested_total 12",
        "# HELP nvr_retention_deleted_segments_total Deleted", "# TYPE nvr_retention_deleted_segments_total counter",
        'nvr_retention_deleted_segments_total{camera="north"} 3',
        'nvr_retention_deleted_segments_total{camera="south"} 4',
        "# HELP nvr_lag_seconds Lag", "# TYPE nvr_lag_seconds histogram",
        'nvr_lag_seconds_bucket{camera="north",le="1"} 2', 'nvr_lag_seconds_bucket{le="1",camera="south"} 5',
    ]) + "\n"
    assert only_cameras(text, {"north"}.__contains__).splitlines() == [
        "# HELP nvr_retention_deleted_segments_total Deleted", "# TYPE nvr_retention_deleted_segments_total counter",
        'nvr_retention_deleted_segments_total{camera="north"} 3',
        "# HELP nvr_lag_seconds Lag", "# TYPE nvr_lag_seconds histogram",
        'nvr_lag_seconds_bucket{camera="north",le="1"} 2',
    ]
    assert only_cameras(text, {"east"}.__contains__) == ""
