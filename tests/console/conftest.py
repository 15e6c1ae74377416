"""The console tests' server: a time-coded camera and a clip camera, people of each kind, and Chromium."""

from __future__ import annotations

import aiohttp
import pytest_asyncio

from nvr.api.auth import create_token
from nvr.api.guard import AUTH_GUARD, AuthLimits
from nvr.api.people import hash_password
from nvr.server.app import NvrServer
from tests.api.support import ServedApi
from tests.conftest import make_config, wait_segments

TC, CLIP = "street", "yard"
PASSWORD = "correct horse battery"
PEOPLE = {"alice": ("viewer", None), "bob": ("viewer", [CLIP]), "root": ("admin", None), "guesser": ("viewer", None),
          "eve": ("evidence", None)}


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def console(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    cameras = [{"id": TC, "url": rtsp.url("tc1"), "name": "Street"}, {"id": CLIP, "url": rtsp.url("cam5"), "name": "Yard"}]
    cfg = make_config(tmp, s3, "console-tests", cameras, server={"listen": "127.0.0.1:0", "data_dir": str(tmp / "data")})
    async with NvrServer(cfg) as srv:
        srv.app[AUTH_GUARD].limits = AuthLimits(burst=1_000_000)  # the per-user limit is what is tested here
        index = srv.backend.index
        digest = hash_password(PASSWORD)
        for name, (role, cams) in PEOPLE.items():
            index.people.add_user(name=name, role=role, cameras=cams, password_hash=digest)
        tokens = {"admin": create_token(index, name="admin", role="admin", cameras=None)}
        await wait_segments(srv, TC, 1, timeout=60)
        await wait_segments(srv, CLIP, 1, timeout=60)
        async with aiohttp.ClientSession() as http:
            yield ServedApi(f"http://127.0.0.1:{srv.http_port}", http, tokens, srv=srv, tmp=tmp)

