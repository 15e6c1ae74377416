"""What the API tests share: a client of a running server, problem checks, and the API over test parts.

``served_api`` serves ``build_app`` over services built from ``StorageParts``
(nothing recording, nothing started but what a test starts), for tests of one
route family or of the error mapping that need no cameras.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from nvr.api.app import SERVER_OPTIONS, build_app
from nvr.api.auth import create_token
from nvr.api.deps import ClipSettings, Services
from nvr.api.metrics import HttpMetrics, MetricsSources
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.exports import ExportService
from nvr.ingest.lanes import IngestService
from nvr.recording.registry import CameraRegistry
from nvr.recording.spoolwatch import SpoolWatch
from nvr.recording.supervisor import RecorderSupervisor
from nvr.server.app import NvrServer
from retention.service import RetentionService, RetentionSettings
from storage.audit import AuditLog
from storage.keyring import Keyring
from storage.retrieve import open_segment
from tests.support.api import ApiClient
from tests.support.parts import StorageParts
from tests.support.rawsql import sql_rows

ROLES = ("viewer", "evidence", "admin")


@dataclass
class ServedApi(ApiClient):
    """The client of a running test server, with the server (or the services) behind it."""

    srv: NvrServer | None = None
    services: Services | None = None
    tmp: Path | None = None


async def problem_of(resp: aiohttp.ClientResponse, status: int, fragment: str = "") -> dict[str, Any]:
    """The problem+json body of ``resp``, checked: the status, the media type, the detail's ``fragment``."""
    problem = await resp.json(content_type=None)
    assert resp.status == status, problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and fragment in problem["detail"], problem
    return problem


async def recorded_gap(api, rtsp, camera: str, mount: str) -> tuple[list, int]:
    """Take ``camera``'s simulator ``mount`` away until ffmpeg restarts, bring it back, wait for footage after it.

    Returns the camera's rows and the index of the first segment after the newest gap.
    """
    from tests.conftest import wait_segments  # the session fixtures' module, imported when used

    srv = api.srv
    status = srv.recorders.status(camera)
    restarts = status.restarts
    await asyncio.to_thread(rtsp.drop, mount)
    await srv.pulse.wait_until(lambda: status.restarts > restarts, timeout=60)
    before = len(srv.backend.index.segments(camera))
    await asyncio.to_thread(rtsp.restore, mount)
    await wait_segments(srv, camera, before + 3, timeout=60)
    rows = srv.backend.index.segments(camera)
    return rows, max(i for i in range(1, len(rows)) if rows[i].start_ms - rows[i - 1].end_ms > 100)


def body_kw(body: Any) -> dict[str, Any]:
    """Request keywords for a table row's body: a str is sent raw as JSON, None sends none."""
    if isinstance(body, str):
        return {"data": body, "headers": {"Content-Type": "application/json"}}
    return {} if body is None else {"json": body}


async def refused_without_change(api, method: str, path: str, token: str, body: Any, status: int,
                                 fragment: str) -> None:
    """A retention or hold request refused with ``status`` naming ``fragment``; no hold or rule changed."""
    index = api.srv.backend.index
    before = sql_rows(index, "SELECT COUNT(*) FROM retention_holds")[0][0], api.srv.retention.stored.version
    await problem_of(await api.request(method, path, token, **body_kw(body)), status, fragment)
    after = sql_rows(index, "SELECT COUNT(*) FROM retention_holds")[0][0], api.srv.retention.stored.version
    assert after == before  # nothing changed


def parts_services(parts: StorageParts, *, keyring: Keyring | None = None, **changes: Any) -> Services:
    """The API's services over ``parts``: real, and not started (no recorder, no sweep, no export job).

    ``keyring`` replaces the parts' own for everything the API decrypts or signs with.
    """
    keyring = keyring or parts.keyring
    audit = AuditLog(parts.index)
    recorders = RecorderSupervisor(lambda cam: None)
    cameras = CameraRegistry(parts.index, recorders, audit)
    retention = RetentionService(index=parts.index, store=parts.store, node_id="test", audit=audit,
                                 settings=RetentionSettings())
    spoolwatch = SpoolWatch(parts.spool, audit, limit_bytes=1 << 30, min_free_bytes=0)
    checkpoints = CheckpointWriter(store=parts.store, index=parts.index, keyring=keyring, node_id="test",
                                   interval=3600, on_event=audit.system)
    exports = ExportService(store=parts.store, index=parts.index, keyring=keyring, node_id="test",
                            audit=audit, directory=parts.data_dir / "exports", checkpoints=checkpoints)

    async def read_segment(row):
        return await parts.store.run(open_segment, parts.store, parts.index, keyring, row)

    services = Services(
        index=parts.index, store=parts.store, keyring=keyring, audit=audit, cameras=cameras,
        recorders=recorders, spool=parts.spool, read_segment=read_segment,
        status=lambda: {"cameras": {}, "alarms": []},
        metrics=MetricsSources(ingest=IngestService(parts.ingestor()), spoolwatch=spoolwatch, recorders=recorders,
                               cameras=cameras, retention=retention, http=HttpMetrics()),
        clips=ClipSettings(tmp_dir=parts.data_dir / "tmp" / "clips", max_seconds=600),
        retention=retention, exports=exports, checkpoints=checkpoints,
    )
    return replace(services, **changes)


@asynccontextmanager
async def served_api(services: Services, scoped: dict[str, list[str]] | None = None) -> AsyncIterator[ServedApi]:
    """``build_app(services)`` on a local port, with a token per role (and per ``scoped`` name: its cameras)."""
    tokens = {role: create_token(services.index, name=role, role=role, cameras=None) for role in ROLES}
    for name, cams in (scoped or {}).items():
        tokens[name] = create_token(services.index, name=name, role="evidence", cameras=cams)
    server = TestServer(build_app(services), host="127.0.0.1")
    await server.start_server(**SERVER_OPTIONS)  # the options the real server's runner is given
    try:
        async with aiohttp.ClientSession() as http:
            yield ServedApi(str(server.make_url("")).rstrip("/"), http, tokens, services=services)
    finally:
        await server.close()
