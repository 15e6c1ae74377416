"""Live view through both doors, checked with independent decoders: Debian's ffmpeg and aiohttp's WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import statistics
import time

import pytest

from nvr.live import framing
from tests.api.support import problem_of
from tests.live.conftest import CLIP, PER_TOKEN, TC
from tests.support.rtsp import independent_ffmpeg
from tests.support.timecode import read_frames

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def _ws_messages(live, token: str, count: int) -> list[tuple[dict, bytes, float]]:
    out = []
    headers = {"Authorization": f"Bearer {live.tokens[token]}"}
    async with live.http.ws_connect(f"{live.base}/api/v1/cameras/{TC}/live", headers=headers) as ws:
        while len(out) < count:
            msg = await asyncio.wait_for(ws.receive_bytes(), 20)
            h, body = framing.decode(msg)
            out.append((h, body, time.time()))
    return out


async def test_websocket_sends_an_init_then_live_fragments_of_the_time_coded_camera(live, tmp_path):
    messages = await _ws_messages(live, "ws", 6)
    kinds = [h["Type"] for h, _, _ in messages]
    assert kinds[0] == "init" and set(kinds[1:]) == {"media"}, kinds
    assert messages[0][0]["Content-Type"].startswith('video/mp4; codecs="avc1.'), messages[0][0]
    # The bytes, joined as a MSE client appends them, are one fragmented MP4 that Debian's ffmpeg decodes;
    # every frame shows a time code captured moments before its message arrived.
    stream = tmp_path / "ws.mp4"
    stream.write_bytes(b"".join(body for _, body, _ in messages))
    frames = await asyncio.to_thread(lambda: list(read_frames(stream, input_args=["-f", "mp4"], ffmpeg=independent_ffmpeg())))
    assert len(frames) >= 4 * 10 and all(f.wall_ms is not None for f in frames), len(frames)
    walls = [f.wall_ms for f in frames]
    assert walls == sorted(walls)
    arrived = {h["X-Sequence"]: at for h, _, at in messages[1:]}
    assert len(arrived) == 5
    last_arrival_ms = messages[-1][2] * 1000
    assert last_arrival_ms - walls[-1] < 5000, "the newest frame is not live"
    media = [h for h, _, _ in messages[1:]]
    assert [float(h["X-Media-Time"]) for h in media] == sorted(float(h["X-Media-Time"]) for h in media)
    assert float(media[0]["X-Media-Time"]) == 0.0
    assert all(h["X-Skipped"] == "0" for h in media)


async def test_live_mp4_is_one_endless_mp4_that_debians_ffmpeg_decodes_live(live):
    made = await live.json("POST", f"/api/v1/cameras/{TC}/live-links", "mp4", status=201, json={"seconds": 60})
    url = f"{live.base}{made['mp4']}"

    def decode() -> list:
        frames = []
        for f in read_frames(url, input_args=["-f", "mp4"], ffmpeg=independent_ffmpeg()):
            frames.append(f)
            if len(frames) >= 60:
                break
        return frames

    frames = await asyncio.to_thread(decode)
    lags = [f.received * 1000 - f.wall_ms for f in frames if f.wall_ms is not None]
    assert len(lags) == len(frames) == 60
    assert statistics.median(lags) < 5000, lags


FFPLAY = "/usr/bin/ffplay"
_CLOCK = re.compile(r"^\s*(-?\d+\.\d+) (?:M-V|M-A|A-V)?:?", re.M)


async def test_ffplay_plays_live_mp4(live):
    if not os.access(FFPLAY, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{FFPLAY} missing in CI (scripts/test installs Debian's ffmpeg)")
        pytest.skip(f"{FFPLAY} missing")
    made = await live.json("POST", f"/api/v1/cameras/{TC}/live-links", "mp4", status=201, json={"seconds": 60})
    # SDL's dummy drivers: ffplay decodes and "shows" every frame with no display. A live stream has no end,
    # so ffplay is stopped once its clock (the -stats line) passed 3 s of played video.
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = await asyncio.create_subprocess_exec(
        FFPLAY, "-hide_banner", "-stats", "-loglevel", "error", f"{live.base}{made['mp4']}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
    seen, clock = "", 0.0
    try:
        async with asyncio.timeout(60):
            while clock < 3.0:
                chunk = await proc.stderr.read(4096)
                assert chunk, f"ffplay ended (exit {await proc.wait()}): {seen[-2000:]}"
                seen += chunk.decode(errors="replace").replace("\r", "\n")
                clock = max([clock, *(float(m) for m in _CLOCK.findall(seen))])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert "error" not in seen.lower(), seen[-2000:]


async def test_a_viewer_that_stops_reading_skips_ahead_and_recording_goes_on(live):
    """A client that reads nothing for a while fills its CLIPP window and the viewer's bounded queue: the viewer
    skips to the latest keyframe when it reads again, and the camera's segments keep coming without a gap."""
    srv, index = live.srv, live.srv.backend.index
    before = index.last_end_ms(CLIP) or 0
    path = f"/api/v1/cameras/{CLIP}/live.mp4"
    # A tiny receive buffer, set before connecting: the server's writes block after a few kilobytes.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = live.base.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {live.tokens['slow']}\r\n\r\n")
    await loop.sock_sendall(sock, request.encode())
    try:
        head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 20)
        assert head.startswith(b"HTTP/1.1 200"), head
        hub = srv.live

        def viewer():
            feed = hub.feeds.get((CLIP, "main"))
            return next((v for v in feed.viewers if v.key == "token:slow"), None) if feed else None

        try:
            await srv.pulse.wait_until(lambda: viewer() is not None and viewer().skipped > 0, timeout=60)
        except TimeoutError:
            v = viewer()
            raise AssertionError(f"no skip: {v and (v.sent_fragments, v.sent_bytes, len(v._queue), v.skipped)}"
                                 ) from None
        v = viewer()
        # Bounded: what waits for this viewer is never more than its queue of fragments.
        assert len(v._queue) <= v.max_queue
        # Reading again: the stream flows on, fragments sent after the skip included.
        sent, got = v.sent_fragments, 0
        try:
            async with asyncio.timeout(30):
                while v.sent_fragments < sent + 3:
                    chunk = await loop.sock_recv(sock, 65536)
                    assert chunk, "the server closed the stream"
                    got += len(chunk)
        except TimeoutError:
            raise AssertionError(f"stuck: sent {v.sent_fragments} (was {sent}), read {got} bytes, queue {len(v._queue)},"
                                 f" skipped {v.skipped}, ended {v.ended}") from None
    finally:
        sock.close()
    # Meanwhile the camera recorded on: newer segments, no gap in its timeline since the viewer came.
    await srv.pulse.wait_until(lambda: (index.last_end_ms(CLIP) or 0) > before + 4000, timeout=30)
    rows = [r for r in index.segments(CLIP) if r.end_ms > before]
    holes = [b.start_ms - a.end_ms for a, b in itertools.pairwise(rows)]
    assert all(h < 1000 for h in holes), holes


async def test_live_sessions_are_limited_per_token_with_429_and_retry_after(live):
    path = f"{live.base}/api/v1/cameras/{CLIP}/live"
    headers = {"Authorization": f"Bearer {live.tokens['limit']}"}
    open_ = []
    try:
        for _ in range(PER_TOKEN):
            ws = await live.http.ws_connect(path, headers=headers)
            open_.append(ws)
            await asyncio.wait_for(ws.receive_bytes(), 20)  # the init: the session is counted
        resp = await live.http.get(path, headers={**headers, "Connection": "Upgrade", "Upgrade": "websocket",
                                                  "Sec-WebSocket-Version": "13",
                                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        problem = await problem_of(resp, 429, "live_viewers_per_token")
        assert resp.headers["Retry-After"] == "5", problem
        # Another token is not held back by this one's sessions.
        other = await live.http.get(f"{live.base}/api/v1/cameras/{CLIP}/live.mp4",
                                    headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
        assert other.status == 200 and (await other.content.read(1000))
        other.close()
    finally:
        for ws in open_:
            await ws.close()


async def test_every_session_is_audited_with_who_which_camera_and_from_when_to_when(live):
    index = live.srv.backend.index
    before = {e.id for e in index.audit_entries(action="live.end")}
    messages = await _ws_messages(live, "audit", 3)
    assert messages
    await live.srv.pulse.wait_until(
        lambda: any(e.id not in before and e.actor == "token:audit" for e in index.audit_entries(action="live.end")),
        timeout=30)
    start = [e for e in index.audit_entries(action="live.start") if e.actor == "token:audit"][-1]
    end = [e for e in index.audit_entries(action="live.end") if e.actor == "token:audit"][-1]
    assert start.target == end.target == TC
    assert start.detail["door"] == end.detail["door"] == "ws" and start.detail["via"] == "bearer"
    assert end.detail["start"] <= end.detail["end"] and end.detail["bytes"] > 0 and end.detail["fragments"] >= 2
    assert end.detail["reason"] == "the client left", end.detail
    # And counted for Prometheus: sessions and bytes per camera.
    text = await (await live.get("/metrics", "admin")).text()
    sessions = re.search(rf'^nvr_live_sessions_total{{camera="{TC}"}} (\d+)', text, re.M)
    sent = re.search(rf'^nvr_live_sent_bytes_total{{camera="{TC}"}} (\d+)', text, re.M)
    assert sessions and int(sessions[1]) >= 1 and sent and int(sent[1]) >= end.detail["bytes"], text[-1500:]


async def test_scope_links_and_bad_requests_get_precise_answers(live):
    # A camera-scoped token sees no other camera: 404, as if it did not exist.
    resp = await live.get(f"/api/v1/cameras/{TC}/live.mp4", "scoped")
    await problem_of(resp, 404, "does not exist")
    resp = await live.request("POST", f"/api/v1/cameras/{TC}/live-links", "scoped", json={})
    await problem_of(resp, 404, "does not exist")
    # A link is for its camera only.
    made = await live.json("POST", f"/api/v1/cameras/{CLIP}/live-links", "link", status=201, json={"seconds": 10})
    token = made["mp4"].split("token=")[1]
    resp = await live.get(f"/api/v1/cameras/{TC}/live.mp4?token={token}", None)
    await problem_of(resp, 403, "does not cover live footage")
    resp = await live.get(f"/api/v1/cameras/{CLIP}/live.mp4?token={token[:-2]}xx", None)
    await problem_of(resp, 401)
    # A link for a range in the past does not watch live.
    past = await live.json("POST", f"/api/v1/cameras/{CLIP}/vod-links", "link", status=201,
                           json={"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"})
    old = past["playlist"].split("token=")[1]
    resp = await live.get(f"/api/v1/cameras/{CLIP}/live.mp4?token={old}", None)
    await problem_of(resp, 403, "does not cover live footage")
    # Bad bodies and the wrong door.
    resp = await live.request("POST", f"/api/v1/cameras/{CLIP}/live-links", "link", json={"seconds": 5})
    await problem_of(resp, 400, "seconds")
    resp = await live.get(f"/api/v1/cameras/{CLIP}/live", "link")
    await problem_of(resp, 400, "WebSocket")
    # HEAD: what a player asks first, no picture sent.
    resp = await live.request("HEAD", f"/api/v1/cameras/{CLIP}/live.mp4", "link")
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    # The link's WebSocket door plays too.
    async with live.http.ws_connect(f"{live.base}{made['ws']}") as ws:
        h, _ = framing.decode(await asyncio.wait_for(ws.receive_bytes(), 20))
        assert h["Type"] == "init"


async def test_a_substream_opens_while_watched_and_closes_after_its_last_viewer(live, tmp_path):
    hub = live.srv.live
    assert (TC, "sub") not in hub.feeds
    headers = {"Authorization": f"Bearer {live.tokens['sub']}"}
    bodies = []
    async with live.http.ws_connect(f"{live.base}/api/v1/cameras/{TC}/live?stream=sub", headers=headers) as ws:
        while len(bodies) < 4:
            h, body = framing.decode(await asyncio.wait_for(ws.receive_bytes(), 30))
            bodies.append(body)
        feed = hub.feeds[TC, "sub"]
        pid = _substream_pid(live)
        assert pid is not None and _alive(pid), "no ffmpeg of its own while the substream is watched"
        assert feed.latest is not None and feed.latest.wall_source == "arrival"
    stream = tmp_path / "sub.mp4"
    stream.write_bytes(b"".join(bodies))
    frames = await asyncio.to_thread(lambda: list(read_frames(stream, input_args=["-f", "mp4"],
                                                              ffmpeg=independent_ffmpeg())))
    assert len(frames) >= 20 and all(f.wall_ms is not None for f in frames)
    # The last viewer left: the connection to the camera closes after the linger (1 s here).
    await live.srv.pulse.wait_until(lambda: (TC, "sub") not in hub.feeds and not _alive(pid), timeout=20)
    # A camera without a substream says so.
    resp = await live.get(f"/api/v1/cameras/{CLIP}/live.mp4?stream=sub", "sub")
    await problem_of(resp, 404, "declares no live_url")
    shown = await live.json("GET", f"/api/v1/cameras/{TC}", "admin")
    assert shown["live_url"].startswith("rtsp://127.0.0.1:")


def _substream_pid(live) -> int | None:
    import psutil

    me = psutil.Process()
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "-an" in child.cmdline() and "pipe:1" in child.cmdline():
                return child.pid
    return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_live_url_with_credentials_is_never_shown_back(live):
    secret = "s3cr3t-live"
    await live.json("PATCH", f"/api/v1/cameras/{CLIP}", "admin", json={"live_url": f"rtsp://u:{secret}@127.0.0.1:9/x"})
    try:
        shown = await live.json("GET", f"/api/v1/cameras/{CLIP}", "admin")
        assert secret not in json.dumps(shown) and shown["live_url"].startswith("rtsp://")
        entries = live.srv.backend.index.audit_entries(action="camera.update", target=CLIP)
        assert entries and secret not in json.dumps([e.detail for e in entries])
        resp = await live.request("PATCH", f"/api/v1/cameras/{CLIP}", "admin", json={"live_url": "file:///etc/passwd"})
        await problem_of(resp, 400, "live_url")
    finally:
        await live.json("PATCH", f"/api/v1/cameras/{CLIP}", "admin", json={"live_url": ""})
