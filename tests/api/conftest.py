"""The two servers the API tests share (started once for the package, on the package's event loop).

* ``api``: two recording RTSP cameras (``A``, ``B``), clips up to 10 minutes;
  tokens per role, ``scoped`` (viewer) and ``scoped-admin`` (admin) for ``A`` only.
* ``retention_api``: camera ``YARD`` recording on top of two hours of
  back-dated segments (ingested before the server starts, so nothing waits in
  real time), camera ``DOCK`` registered but disabled; S3 object lock is on and
  ``retention.min_age`` is one minute, so live segments are object-locked
  (GOVERNANCE) and young for the whole package.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest_asyncio

from nvr.api.auth import create_token
from nvr.api.guard import AUTH_GUARD, AuthLimits
from nvr.base.times import now_ms
from nvr.server.app import NvrServer
from nvr.server.backend import open_index
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.spool import Spool
from tests.api.support import ROLES, ServedApi
from tests.conftest import make_config, wait_segments
from tests.support.parts import StorageParts
from tests.support.rawsql import tampering

A, B = "north", "south"
YARD, DOCK = "yard", "dock"
OLD = 20  # back-dated segments of YARD
H = 3_600_000


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def api(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    cfg = make_config(tmp, s3, "api-tests", [{"id": A, "url": rtsp.url("cam7")}, {"id": B, "url": rtsp.url("cam8")}],
                      server={"listen": "127.0.0.1:0", "data_dir": str(tmp / "data"), "max_clip": "10m"})
    async with NvrServer(cfg) as srv:
        # Test after test, this package's own client (127.0.0.1) sends wrong tokens on purpose; its bucket
        # must not run dry for the next module. The limit itself is tested from other loopback addresses
        # with the default limits (test_auth).
        srv.app[AUTH_GUARD].limits = AuthLimits(burst=1_000_000)
        index = srv.backend.index
        tokens = {role: create_token(index, name=role, role=role, cameras=None) for role in ROLES}
        tokens["scoped"] = create_token(index, name="scoped", role="viewer", cameras=[A])
        tokens["scoped-admin"] = create_token(index, name="scoped-admin", role="admin", cameras=[A])
        tokens["revoked"] = create_token(index, name="revoked", role="admin", cameras=None)
        index.revoke_token("revoked")
        tokens["bad"] = "nvr_not-a-real-token"
        await wait_segments(srv, A, 5, timeout=90)
        await wait_segments(srv, B, 5, timeout=90)
        async with aiohttp.ClientSession() as http:
            yield ServedApi(f"http://127.0.0.1:{srv.http_port}", http, tokens, srv=srv, tmp=tmp)


def prefill(cfg, start_ms: int) -> None:
    """Back-dated segments of YARD, in the server's own index, keyring and bucket (no object-lock period)."""
    st = cfg.storage
    store = ObjectStore(endpoint=st.endpoint, access_key=st.access_key, secret_key=st.secret_key, bucket=st.bucket,
                        object_lock=True)
    store.ensure_bucket()
    parts = StorageParts(cfg.data_dir.parent, None, store, open_index(cfg), Keyring.open(cfg.keyring_dir),
                         Spool(cfg.spool_dir))
    try:
        asyncio.run(parts.put_segments(YARD, start_ms, range(OLD), payload=lambda n: os.urandom(4000)))
        # Old footage was ingested long ago: its object-lock period (none here) is over, as the sweep reckons it.
        with tampering(parts.index) as db:
            db.execute("UPDATE segments SET ingested_ms = end_ms + 1000 WHERE camera = ?", (YARD,))
    finally:
        parts.close()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def retention_api(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retention-api")
    cfg = make_config(tmp, s3, f"ret-api-{os.getpid()}", [
        {"id": YARD, "url": rtsp.url("cam3")}, {"id": DOCK, "url": rtsp.url("cam4"), "enabled": False}],
        storage={"object_lock": True}, retention={"min_age": "1m"})
    await asyncio.to_thread(prefill, cfg, now_ms() - 2 * H)
    async with NvrServer(cfg) as srv:  # the server opens, starts and stops its retention service
        index = srv.backend.index
        tokens = {role: create_token(index, name=role, role=role, cameras=None) for role in ROLES}
        tokens["scoped-admin"] = create_token(index, name="scoped-admin", role="admin", cameras=[YARD])
        tokens["scoped-evidence"] = create_token(index, name="scoped-evidence", role="evidence", cameras=[DOCK])
        await wait_segments(srv, YARD, OLD + 3, timeout=90)
        async with aiohttp.ClientSession() as http:
            yield ServedApi(f"http://127.0.0.1:{srv.http_port}", http, tokens, srv=srv, tmp=tmp)


def old_rows(api: ServedApi):
    """YARD's back-dated segments."""
    return [r for r in api.srv.backend.index.segments(YARD) if r.end_ms < now_ms() - H]
