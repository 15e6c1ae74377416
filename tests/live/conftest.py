"""The live tests' server: a time-coded RTSP camera (each frame shows its capture time) and a clip camera.

Started once for the package; limits are set low enough that a test can reach
them (``server.live_viewers_per_token``), and each test uses tokens of its own
so that one test's sessions never count against another's.
"""

from __future__ import annotations

import aiohttp
import pytest_asyncio

from nvr.api.auth import create_token
from nvr.api.guard import AUTH_GUARD, AuthLimits
from nvr.server.app import NvrServer
from tests.api.support import ROLES, ServedApi
from tests.conftest import make_config, wait_segments

TC, CLIP = "street", "yard"
PER_TOKEN = 3


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def live(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    # TC's substream (live_url) is the simulator's other time-coded mount; it closes a second after its last viewer.
    cameras = [{"id": TC, "url": rtsp.url("tc2"), "live_url": rtsp.url("tc1")}, {"id": CLIP, "url": rtsp.url("cam6")}]
    cfg = make_config(tmp, s3, "live-tests", cameras,
                      server={"listen": "127.0.0.1:0", "data_dir": str(tmp / "data"),
                              "live_viewers_per_token": PER_TOKEN, "live_viewers": 40, "live_linger": "1s"})
    async with NvrServer(cfg) as srv:
        srv.app[AUTH_GUARD].limits = AuthLimits(burst=1_000_000)
        index = srv.backend.index
        tokens = {role: create_token(index, name=role, role=role, cameras=None) for role in ROLES}
        for name in ("ws", "mp4", "browser", "slow", "limit", "audit", "link", "sub"):
            tokens[name] = create_token(index, name=name, role="viewer", cameras=None)
        tokens["scoped"] = create_token(index, name="scoped", role="viewer", cameras=[CLIP])
        await wait_segments(srv, TC, 1, timeout=60)
        await wait_segments(srv, CLIP, 1, timeout=60)
        async with aiohttp.ClientSession() as http:
            yield ServedApi(f"http://127.0.0.1:{srv.http_port}", http, tokens, srv=srv, tmp=tmp)


from tests.base.mp4.conftest import made  # noqa: E402,F401  (the encodes the live unit tests cut up)
