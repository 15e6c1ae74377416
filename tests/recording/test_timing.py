"""Time-faithful recording on misbehaving cameras, measured frame by frame (docs/timing.md).

One server records seven cameras at once while each misbehaves on its own schedule: RTP timestamps
that jump back 3 s, ahead 3 s and back 15 s; pauses with and without a timestamp reset; a freeze with
the socket open; a camera away 10 s three times; MJPEG over HTTP at 10 fps; an MPEG-TS/UDP source
whose sender restarts; a port that accepts and never answers. Every camera but the last is
time-coded, so each stored frame's place (segment start + pts) is compared with the capture time it
shows. Run with ``-s`` to see the table of worst placement errors.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import aiohttp
import pytest

from nvr.api.auth import create_token
from nvr.base.times import ms_to_rfc3339, now_ms
from tests.conftest import make_config, running, wait_segments
from tests.support.mjpeg_sim import MjpegSimulator
from tests.support.placement import overlaps, placements, timeline_gaps
from tests.support.rtsp import RtspSimulator, ffmpeg_exe, gst_available
from tests.support.s3proxy import S3Proxy

pytestmark = pytest.mark.integration

BOUND_MS = 500  # the placement bound of the issue and of recording.placement_bound's default
GAP_SLACK_MS = 3000  # a gap may exceed its outage by this much (reconnecting, the first keyframe)
MOUNTS = ("jumps", "pauses", "freeze", "flap", "relay")
OUTAGE_S = 10
FREEZE_S = 30


@pytest.fixture(scope="module")
def cameras() -> Iterator[RtspSimulator]:
    """A simulator of this module's own: its faults must not reach other tests' cameras."""
    reason = gst_available(timecoded=True)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"GStreamer RTSP server unavailable in CI: {reason}")
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")
    sim = RtspSimulator().start(mounts=(), timecoded=MOUNTS)
    yield sim
    sim.stop()


class SilentPort:
    """A TCP port that accepts every connection and never says a word (a hung camera web server)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Watcher:
    """Another client of a mount, reading it all along: the camera streams on while nvr's link to it fails.

    (A shared GStreamer media left by its last client is torn down; the camera it simulates would not be.)
    """

    def __init__(self, source: str) -> None:
        self.proc = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp",
             "-timeout", "120000000", "-i", source, "-map", "0:v", "-c", "copy", "-f", "null", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class UdpRelay:
    """An MPEG-TS/UDP camera: ffmpeg relaying a time-coded RTSP mount, restartable (its timestamps restart)."""

    def __init__(self, source: str, port: int) -> None:
        self.source, self.port = source, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp",
             "-i", self.source, "-map", "0:v", "-c", "copy", "-f", "mpegts",
             f"udp://127.0.0.1:{self.port}?pkt_size=1316"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def at(t0: float, seconds: float) -> None:
    """The scenario's clock: return at ``t0 + seconds`` (cameras misbehave on a schedule, not on an event)."""
    await asyncio.sleep(max(0.0, t0 + seconds - time.time()))


async def test_every_frame_is_placed_within_the_bound_whatever_the_camera_does(cameras, s3, bucket, tmp_path):
    mjpeg = MjpegSimulator(fps=10).start()
    silent = SilentPort()
    relay = UdpRelay(cameras.url("relay"), free_udp_port())
    relay.start()
    watchers = [Watcher(cameras.url(m)) for m in ("flap", "freeze")]
    link = await S3Proxy(f"127.0.0.1:{cameras.port}").start()  # the flapping camera's consumer link
    cams = [{"id": m, "url": cameras.url(m)} for m in ("jumps", "pauses", "freeze")]
    cams.append({"id": "flap", "url": f"rtsp://127.0.0.1:{link.port}/flap"})
    cams += [{"id": "mjpeg", "url": mjpeg.url()}, {"id": "relay", "url": f"udp://127.0.0.1:{relay.port}"},
             {"id": "dead", "url": f"rtsp://127.0.0.1:{silent.port}/stream"}]
    # Stall after 20 s, as in production (4 segments + the connect timeout) the frame watch comes first.
    cfg = make_config(tmp_path, s3, bucket, cams, recording={"stall_timeout": "20s"})
    outages: dict[str, list[tuple[int, int]]] = {"flap": [], "freeze": []}
    seen: dict[str, str] = {}
    try:
        async with running(cfg) as srv:
            index, recorders = srv.backend.index, srv.recorders
            for cam in ("jumps", "pauses", "freeze", "flap", "mjpeg", "relay"):
                await wait_segments(srv, cam, 2, timeout=60)
            t0 = time.time()
            scenario_start = now_ms()

            async def flapping() -> None:
                for k in range(3):
                    await at(t0, 2 + k * 22)
                    down = now_ms()
                    link.mode = "refuse"
                    link.break_connections()
                    await at(t0, 2 + k * 22 + OUTAGE_S)
                    link.mode = "pass"
                    outages["flap"].append((down, now_ms()))
                await srv.pulse.wait_until(lambda: recorders.statuses()["flap"].health == "flapping", timeout=30)
                seen["flap"] = recorders.statuses()["flap"].problem or ""

            async def freezing() -> None:
                await at(t0, 3)
                down = now_ms()
                await asyncio.to_thread(cameras.freeze, "freeze", FREEZE_S)
                await srv.pulse.wait_until(lambda: bool(recorders.statuses()["freeze"].problem), timeout=25)
                seen["freeze"] = recorders.statuses()["freeze"].problem or ""
                await at(t0, 3 + FREEZE_S)
                outages["freeze"].append((down, now_ms()))

            async def jumping() -> None:
                # Off the 2 s segment boundaries (t0 is one): see "Bounds" in docs/timing.md for a pause on one.
                for when, step in ((5, -3), (15, 3), (25, -15)):
                    await at(t0, when)
                    await asyncio.to_thread(cameras.jump, "jumps", step)

            async def pausing() -> None:
                # Mid-segment, 1 s after one of this camera's segment boundaries: a pause right after a boundary
                # is marked one segment early (the bounds in docs/timing.md), which this test does not measure.
                # The middle leaves a second either way for the pause command to come late on a loaded machine.
                boundary = (index.last_end_ms("pauses") or now_ms()) / 1000
                first = boundary + 1.0 + 2 * math.ceil((t0 + 5 - boundary - 1.0) / 2)
                await asyncio.sleep(max(0.0, first - time.time()))
                await asyncio.to_thread(cameras.pause, "pauses", 4, reset=True)
                await asyncio.sleep(max(0.0, first + 14 - time.time()))
                await asyncio.to_thread(cameras.pause, "pauses", 4)

            async def relaying() -> None:
                await at(t0, 8)
                await asyncio.to_thread(relay.restart)

            await asyncio.gather(flapping(), freezing(), jumping(), pausing(), relaying())
            seen["dead"] = recorders.statuses()["dead"].problem or ""
            alarms = srv.alarms()
            scenario_end = now_ms()
            # Each camera has delivered footage from after the scenario: what it recorded is all indexed.
            for cam in ("jumps", "pauses", "freeze", "flap", "mjpeg", "relay"):
                await srv.pulse.wait_until(lambda c=cam: (index.last_end_ms(c) or 0) > scenario_end + 2000,
                                           timeout=40)

            table = []
            for cam in ("jumps", "pauses", "freeze", "flap", "mjpeg", "relay"):
                rows = index.segments(cam)
                found = await placements(rows, index.ledger_records(cam), srv.read_segment, tmp_path)
                unmarked = [p for p in found if not p.corrected]
                marked = [p for p in found if p.corrected]
                frames = sum(len(p.errors) for p in found)
                assert frames >= 0.9 * sum(p.frames for p in found), f"{cam}: time codes unreadable"
                worst = max(p.worst for p in unmarked)
                if os.environ.get("NVR_TIMING_DEBUG"):
                    for p in found:
                        print(cam, p.row.id, p.row.start_ms % 100000, p.row.end_ms % 100000, p.row.partial,
                              p.record.get("placement_correction_ms"), min(p.errors, default=None),
                              max(p.errors, default=None), p.frames, p.errors if p.worst > BOUND_MS else "")
                table.append((cam, frames, worst, [p.record["placement_correction_ms"] for p in marked]))
                # Every frame outside a marked segment within the bound; no overlap; nothing in the future.
                assert worst <= BOUND_MS, (cam, [(p.row.id, p.worst) for p in unmarked if p.worst > BOUND_MS])
                assert overlaps(rows) == [], cam
                assert all(r.end_ms <= r.ingested_ms for r in rows), cam
                clock = "arrival" if cam == "mjpeg" else "camera"
                assert {p.record.get("clock") for p in found if not p.row.partial} == {clock}, cam
                gaps = timeline_gaps(rows, scenario_start, scenario_end)
                if cam in outages:
                    # Each real outage is one gap, at most GAP_SLACK_MS longer, and no other gap.
                    assert len(gaps) == len(outages[cam]), (cam, gaps, outages[cam])
                    for (g0, g1), (o0, o1) in zip(gaps, outages[cam], strict=True):
                        assert g0 < o1 and g1 > o0, (cam, (g0, g1), (o0, o1))
                        assert g1 - g0 <= (o1 - o0) + GAP_SLACK_MS, (cam, (g1 - g0) / 1000)
                else:
                    assert gaps == [], (cam, gaps)
                if cam == "mjpeg":  # stored at the camera's real rate (10 fps), not ffmpeg's 25 fps default
                    whole = [p for p in found[1:-1] if p.row.duration_ms > 1000]
                    rate = sum(p.frames for p in whole) / (sum(p.row.duration_ms for p in whole) / 1000)
                    assert 9.0 <= rate <= 11.0, rate
                    table[-1] = (*table[-1], round(rate, 2))
                if cam == "pauses":  # both pauses are marked, each about its length
                    assert len(marked) >= 2, [p.row.id for p in found]
                    entries = index.audit_entries(action="recording.placement_corrected", target=cam)
                    assert {e.detail["segment"] for e in entries} == {p.row.id for p in marked}
                    timeline = await _timeline(srv, cam, rows[0].start_ms, rows[-1].end_ms)
                    assert {c["segment"] for c in timeline["corrections"]} == {p.row.id for p in marked}
            print("\ncase: frames checked, worst placement error outside marked segments (ms), corrections (ms)")
            for line in table:
                print("  ", *line)
            print("health seen:", seen)
    finally:
        await link.stop()
        for w in watchers:
            w.stop()
        relay.stop()
        silent.close()
        mjpeg.stop()

    # Health named each problem while it lasted.
    assert seen["flap"].startswith("flapping: stopped 3 times"), seen
    assert "no frame from the camera" in seen["freeze"] or "timed out" in seen["freeze"].lower(), seen
    assert seen["dead"].startswith("never recorded since") and "timed out" in seen["dead"].lower(), seen
    assert any(a.startswith("camera dead: never recorded") for a in alarms), alarms


async def _timeline(srv, cam: str, start: int, end: int) -> dict:
    token = create_token(srv.backend.index, name="timing-viewer", role="viewer", cameras=None)
    url = (f"http://127.0.0.1:{srv.http_port}/api/v1/cameras/{cam}/timeline"
           f"?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}")
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return await r.json()
