"""Camera changes are linearised: a DELETE racing a PATCH never hangs, and a deleted camera stops recording."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from nvr.base.errors import NotFound
from nvr.base.ffmpeg import find_ffmpeg
from nvr.config.settings import parse_config
from nvr.recording.recorder import CameraRecorder
from nvr.recording.registry import CameraRegistry
from nvr.recording.supervisor import RecorderSupervisor
from storage.audit import AuditLog
from storage.index import Index
from storage.spool import Spool

pytestmark = pytest.mark.integration

ACTOR = ("test", "admin")


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped is not recording
        return f.read().split()[2] != "Z"


async def test_delete_racing_patch_100_times_never_hangs_and_stops_the_recorder(tmp_path):
    cfg = parse_config({"server": {"data_dir": str(tmp_path / "data")},
                        "recording": {"stop_grace": "2s", "backoff_initial": "0.1s"}}, base=tmp_path)
    index = Index(tmp_path / "index.sqlite3")
    spool = Spool(tmp_path / "spool")
    ffmpeg = find_ffmpeg()

    async def floor(camera):
        await asyncio.sleep(random.uniform(0, 0.02))  # the window a stop used to fall into
        return None

    async def nothing(*_a, **_kw):
        return None

    pids: list[int] = []

    def make(camera):
        rec = CameraRecorder(camera, cfg, ffmpeg=ffmpeg, spool=spool, floor=floor, on_segment=nothing,
                             recover=nothing)
        return rec

    supervisor = RecorderSupervisor(make)
    registry = CameraRegistry(index, supervisor, AuditLog(index))
    await registry.load(())
    try:
        for i in range(100):
            await registry.create({"id": "race", "url": "lavfi:testsrc2=size=64x64:rate=5"}, ACTOR)
            await asyncio.sleep(random.uniform(0, 0.05))  # any point of the recorder's start
            st = supervisor.status("race")
            patch = registry.update("race", {"url": f"lavfi:color=c=red:s=64x64:r={5 + i % 3}"}, ACTOR)
            delete = registry.delete("race", ACTOR)
            if i % 2:
                patch, delete = delete, patch
            async with asyncio.timeout(15):  # never a hang
                results = await asyncio.gather(patch, delete, return_exceptions=True)
            for r in results:
                assert r is None or not isinstance(r, BaseException) or isinstance(r, NotFound), r
            assert registry.get("race") is None
            assert supervisor.status("race") is None  # no recorder left for a deleted camera
            if st is not None and st.pid:
                pids.append(st.pid)
        await asyncio.sleep(0)
        assert not [p for p in pids if _alive(p)], "ffmpeg still running for a deleted camera"
    finally:
        await supervisor.stop_all()
        index.close()
