"""Fixtures that start real services: SeaweedFS S3, a GStreamer RTSP camera simulator, the nvr server."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from nvr.config.settings import Config, parse_config
from nvr.server.app import NvrServer
from storage.embedded_s3 import EmbeddedS3, S3Endpoint
from tests.support import indexdb, tomlw
from tests.support.loopthread import LoopThread
from tests.support.parts import StorageParts, open_parts
from tests.support.postgres import PostgresServer
from tests.support.postgres import binaries as pg_binaries
from tests.support.postgres import start as start_postgres
from tests.support.rtsp import RtspSimulator, gst_available, make_clip

MOUNTS = tuple(f"cam{i}" for i in range(1, 9))
# Time-coded cameras: every frame shows its capture time (tests/support/timecode.py decodes it).
CHROMIUM = "/usr/bin/chromium"
TIMECODED = ("tc1", "tc2")
# The clip with a live tone in each audio codec cameras send (mount -> codec).
AUDIO = {"acam": "aac", "pcma": "pcma", "pcmu": "pcmu"}
_bucket_ids = itertools.count(1)


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> S3Endpoint:
    """One embedded SeaweedFS for the session; each test gets its own bucket."""
    lt = LoopThread()
    # weed grows 7 volumes per bucket and allows free disk ÷ volume size of them: at the product's
    # 256 MB, 70 GB free holds only ~41 buckets and the session makes more. Test objects are small.
    emb = EmbeddedS3(tmp_path_factory.mktemp("s3"), volume_size_limit_mb=16)
    ep = lt.run(emb.start())
    yield ep
    lt.run(emb.stop())
    lt.close()


def minio_client(ep: S3Endpoint) -> Minio:
    return Minio(ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key, secure=ep.secure)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (Debian's binaries); each test gets its own database."""
    bindir = pg_binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15+ server binaries (Debian's postgresql) missing in CI")
        pytest.skip("PostgreSQL 15+ server binaries missing (apt-get install postgresql)")
    server = start_postgres(bindir)
    yield server
    server.stop()


@pytest.fixture(params=indexdb.backends())
def index_backend(request) -> Iterator[str]:
    """The index every part and server of this test uses: ``sqlite`` or ``postgresql`` (a fresh database)."""
    if request.param == "sqlite":
        indexdb.use(None)
        yield "sqlite"
        return
    pg: PostgresServer = request.getfixturevalue("postgres")
    url = pg.create_database()
    indexdb.use(indexdb.Target(url, pg.password_file, pg))
    try:
        yield "postgresql"
    finally:
        indexdb.use(None)
        pg.drop_database(url)


@pytest.fixture
def bucket(index_backend) -> str:
    """A fresh bucket name; a test with a bucket runs on each index backend (``index_backend``)."""
    return f"t{os.getpid()}-{next(_bucket_ids)}"


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    # One keyframe per second, so 2-second segments cut on time.
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.h264", width=320, height=240, fps=15, seconds=4, gop=15)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, which the browser tests drive with Playwright (scripts/test installs it)."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI (scripts/test installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def rtsp(clip) -> RtspSimulator:
    reason = gst_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"GStreamer RTSP server unavailable in CI: {reason}")
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")
    # Missing audio elements cost only the audio mounts (tests/recording/test_audio.py skips), not every camera.
    audio = AUDIO if gst_available(audio=tuple(AUDIO.values())) is None else {}
    sim = RtspSimulator()
    sim.start(mounts=MOUNTS, clip=clip, timecoded=TIMECODED, audio=audio)
    yield sim
    sim.stop()


def make_config(tmp_path: Path, ep: S3Endpoint, bucket: str, cameras: list[dict[str, Any]], **overrides) -> Config:
    """A config for a test server (short segments and back-off, HTTP on a free port), also written to nvr.toml."""
    recording = {"segment_seconds": 2, "backoff_initial": "0.3s", "backoff_max": "2s", "connect_timeout": "3s",
                 "healthy_after": "20s", "stop_grace": "5s"}
    recording.update(overrides.pop("recording", {}))
    storage = {"endpoint": ep.endpoint, "access_key": ep.access_key, "secret_key": ep.secret_key,
               "bucket": bucket, "retry_max": "2s"}
    storage.update(overrides.pop("storage", {}))
    data = {
        "server": {"listen": "127.0.0.1:0", "data_dir": str(tmp_path / "data")},
        "storage": storage,
        "recording": recording,
        "cameras": cameras,
        "index": indexdb.config_table(),
        **overrides,
    }
    (tmp_path / "nvr.toml").write_text(tomlw.dumps(data))
    return parse_config(data, source=str(tmp_path / "nvr.toml"), base=tmp_path)


@asynccontextmanager
async def running(cfg: Config, **kw) -> AsyncIterator[NvrServer]:
    async with NvrServer(cfg, **kw) as srv:
        yield srv


async def wait_segments(srv: NvrServer, camera: str, count: int, timeout: float) -> None:
    """Wait until ``camera`` has ``count`` segments in the index (event-driven: every ingest fires the pulse)."""
    index = srv.backend.index
    await srv.pulse.wait_until(lambda: len(index.segments(camera)) >= count, timeout)


@pytest.fixture
def storage_parts(tmp_path, s3, bucket) -> Iterator[StorageParts]:
    """A fresh bucket with a data dir's index, keyring and spool under ``tmp_path / "data"``."""
    parts = open_parts(tmp_path, s3, bucket)
    yield parts
    parts.close()
