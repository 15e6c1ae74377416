"""HLS of a range against a real server: recorded RTSP cameras, real S3, and ffmpeg as the independent player."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest

from nvr.api.auth import create_token
from nvr.api.deps import URL_SIGNER
from nvr.api.guard import AUTH_GUARD
from nvr.api.urltokens import Grant
from nvr.base.mp4 import producer_times
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from nvr.playback.hls import LEAD_S
from nvr.server.app import URL_TOKEN_KEY
from tests.api.conftest import A, B
from tests.api.support import problem_of, recorded_gap
from tests.support.rtsp import independent_ffmpeg
from tests.support.wait import until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

FFMPEG = independent_ffmpeg()  # Debian's build where installed: not the one the server records with
FPS = 15  # the simulator's clip


def rows_of(api, camera: str):
    return api.srv.backend.index.segments(camera)


def playlist_path(camera: str, start: int, end: int) -> str:
    return f"/api/v1/cameras/{camera}/vod.m3u8?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}"


async def link(api, camera: str, start: int, end: int, token: str = "viewer") -> dict:
    return await api.json("POST", f"/api/v1/cameras/{camera}/vod-links", token, status=201,
                          json={"start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end)})


def entries(text: str) -> list[dict]:
    """The playlist's media segments: URI, EXTINF, date, and the discontinuity and map before each."""
    out, pending = [], {"discontinuity": False, "map": None}
    for line in text.splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            pending["discontinuity"] = True
        elif line.startswith("#EXT-X-MAP:"):
            pending["map"] = re.fullmatch(r'#EXT-X-MAP:URI="(.+)"', line).group(1)
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending["date"] = line.split(":", 1)[1]
        elif line.startswith("#EXTINF:"):
            pending["seconds"] = float(line[8:].rstrip(","))
        elif line and not line.startswith("#"):
            out.append(pending | {"uri": line})
            pending = {"discontinuity": False, "map": None}
    return out


def play(url: str) -> tuple[str, float]:
    """What ffmpeg says at level warning while it decodes the whole playlist, and the seconds of video it decoded."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-v", "warning", "-i", url, "-map", "0:v",
                           "-f", "null", "-progress", "pipe:1", "-"], capture_output=True, text=True, timeout=180)
    frames = [int(v) for v in re.findall(r"^frame=(\d+)", proc.stdout, re.M)]
    said = proc.stderr.strip() + ("" if proc.returncode == 0 else f"\nexit {proc.returncode}")
    return said, (frames[-1] / FPS if frames else 0.0)


async def test_a_playlist_of_a_range_plays_in_ffmpeg_as_recorded(api):
    rows = rows_of(api, A)[1:5]
    start, end = rows[0].start_ms + 300, rows[-1].end_ms - 300
    made = await link(api, A, start, end)
    # Ten minutes to start playing, plus the range's length to play it through.
    assert parse_rfc3339(made["expires"]) - now_ms() == pytest.approx(600_000 + (end - start), abs=5_000)
    resp = await api.get(playlist_path(A, start, end), "viewer")
    text = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert resp.headers["Cache-Control"] == "private, no-store"  # it carries a live token
    for tag in ("#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-ENDLIST"):
        assert tag in text.splitlines()
    target = int(re.search(r"^#EXT-X-TARGETDURATION:(\d+)$", text, re.M).group(1))
    found = entries(text)
    assert [e["date"] for e in found] == [ms_to_rfc3339(r.start_ms) for r in rows]  # RFC 3339, ms, the index's
    assert all(round(e["seconds"]) <= target for e in found)
    assert found[0]["map"] and not any(e["map"] for e in found[1:]) and not any(e["discontinuity"] for e in found)
    # Played over HTTP by an independent ffmpeg, with only the link: every frame of the four segments.
    said, seconds = await asyncio.to_thread(play, api.base + made["playlist"])
    assert said == ""
    recorded = sum(r.duration_ms for r in rows) / 1000
    assert recorded - 0.5 <= seconds <= recorded + 0.2, (seconds, recorded)
    entry = api.srv.backend.index.audit_entries(action="hls.playlist", target=A)[-1]
    assert entry.actor == "token:viewer" and entry.detail["via"] == "link"
    assert entry.detail["start"] == ms_to_rfc3339(start) and entry.detail["end"] == ms_to_rfc3339(end)
    assert entry.detail["client"] == "127.0.0.1" and entry.detail["segments"] == 4
    made_entry = api.srv.backend.index.audit_entries(action="hls.link", target=A)[-1]
    assert made_entry.actor == "token:viewer" and made_entry.detail["expires"] == made["expires"]


async def test_each_media_segment_carries_its_wall_time_on_the_playlist_timeline(api):
    rows = rows_of(api, A)[1:4]
    made = await link(api, A, rows[0].start_ms, rows[-1].end_ms)
    url = api.base + made["playlist"]
    text = await (await api.http.get(url)).text()
    token = parse_qs(urlsplit(made["playlist"]).query)["token"][0]
    found = entries(text)
    assert all(parse_qs(urlsplit(e["uri"]).query)["token"] == [token] for e in found)  # the link's own, not a new one
    audited = len(api.srv.backend.index.audit_entries(action="hls.segment"))
    at = 0.0
    for e, r in zip(found, rows, strict=True):
        assert int(parse_qs(urlsplit(e["uri"]).query)["at"][0]) == round(at * 1000)  # where the EXTINFs put it
        resp = await api.http.get(urljoin(url, e["uri"]))
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
        prfts = producer_times(await resp.read())
        assert prfts
        for p in prfts:  # capture time of each fragment = its date by the playlist (90 kHz: RTSP video)
            assert p.wall_ms == pytest.approx(r.start_ms + (p.media_time / 90_000 - LEAD_S - at) * 1000, abs=2)
        at += e["seconds"]
    init = await api.http.get(urljoin(url, found[0]["map"]))
    assert init.status == 200 and (await init.read())[4:8] == b"ftyp"
    # Fetched under a link, segments are not audited one by one: the playlist's entry stands for them.
    assert len(api.srv.backend.index.audit_entries(action="hls.segment")) == audited


async def test_a_gap_is_a_discontinuity_and_the_playlist_still_plays(api, rtsp):
    rows, i = await recorded_gap(api, rtsp, B, "cam8")
    span = rows[i - 2:i + 2]
    made = await link(api, B, span[0].start_ms, span[-1].end_ms)
    text = await (await api.http.get(api.base + made["playlist"])).text()
    found = entries(text)
    assert [e["discontinuity"] for e in found] == [False, False, True, False]
    assert [e["date"] for e in found] == [ms_to_rfc3339(r.start_ms) for r in span]  # the hole is in the dates
    assert not found[2]["map"]  # the same camera, the same codec configuration: one init
    said, seconds = await asyncio.to_thread(play, api.base + made["playlist"])
    assert said == ""
    recorded = sum(r.duration_ms for r in span) / 1000  # the footage, not the hole
    assert recorded - 0.5 <= seconds <= recorded + 0.2, (seconds, recorded)


async def test_a_bearer_playlist_gets_a_fresh_link_and_bearer_segments_are_audited(api):
    rows = rows_of(api, A)[1:3]
    text = await (await api.get(playlist_path(A, rows[0].start_ms, rows[-1].end_ms), "viewer")).text()
    found = entries(text)
    assert parse_qs(urlsplit(found[0]["uri"]).query)["token"]  # players can't send the header: URIs carry a link
    entry = api.srv.backend.index.audit_entries(action="hls.playlist", target=A)[-1]
    assert entry.detail["via"] == "bearer" and entry.actor == "token:viewer"
    at = parse_qs(urlsplit(found[1]["uri"]).query)["at"][0]
    after = parse_qs(urlsplit(found[1]["uri"]).query)["after"][0]
    before = api.srv.backend.index.audit_entries(action="hls.segment", target=rows[1].id)
    resp = await api.get(f"/api/v1/segments/{rows[1].id}/media.m4s?at={at}&after={after}", "viewer")
    assert resp.status == 200
    now = api.srv.backend.index.audit_entries(action="hls.segment", target=rows[1].id)
    assert len(now) == len(before) + 1  # one entry for one fetch under a bearer token
    assert now[-1].actor == "token:viewer" and now[-1].detail["client"] == "127.0.0.1"
    audited = len(api.srv.backend.index.audit_entries(action="hls.playlist", target=A))
    head = await api.request("HEAD", playlist_path(A, rows[0].start_ms, rows[-1].end_ms), "viewer")
    assert head.status == 200 and await head.read() == b""
    assert len(api.srv.backend.index.audit_entries(action="hls.playlist", target=A)) == audited  # no footage named


async def test_a_link_opens_only_its_camera_and_range(api):
    a_rows, b_rows = rows_of(api, A), rows_of(api, B)
    made = await link(api, A, a_rows[1].start_ms, a_rows[2].end_ms)
    token = parse_qs(urlsplit(made["playlist"]).query)["token"][0]
    refused = [
        f"/api/v1/segments/{b_rows[1].id}/media.m4s?token={token}",  # another camera's segment
        f"/api/v1/segments/{b_rows[1].id}/init.mp4?token={token}",
        f"/api/v1/segments/{a_rows[4].id}/media.m4s?token={token}",  # its camera, outside its range
        f"/api/v1/cameras/{B}/vod.m3u8?token={token}",  # another camera's playlist
        f"/api/v1/cameras/{A}/vod.m3u8?token={token}&start={ms_to_rfc3339(a_rows[0].start_ms)}",  # another range
    ]
    for path in refused:
        await problem_of(await api.get(path, None), 403, "outside this link")
    # A link is no bearer token: routes that don't take one answer as to no token at all.
    await problem_of(await api.get(f"/api/v1/segments/{a_rows[1].id}/content?token={token}", None), 401)
    ok = await api.get(f"/api/v1/segments/{a_rows[2].id}/media.m4s?token={token}", None)
    assert ok.status == 200


async def test_expired_forged_and_revoked_links_are_refused_as_problems(api):
    index, signer, guard = api.srv.backend.index, api.srv.app[URL_SIGNER], api.srv.app[AUTH_GUARD]
    rows = rows_of(api, A)[1:3]
    temp = create_token(index, name="hls-temp", role="viewer", cameras=None)
    made = await link(api, A, rows[0].start_ms, rows[-1].end_ms, token=temp)
    url = made["playlist"]
    token = parse_qs(urlsplit(url).query)["token"][0]
    created = next(c for n, _, _, c, _ in index.tokens() if n == "hls-temp")
    expired = signer.sign(Grant("hls-temp", created, A, rows[0].start_ms, rows[-1].end_ms, now_ms() - 1000))
    player = "127.0.0.4"  # another address of the loopback: its failures are its own (nvr.api.guard)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(player, 0))) as http:
        async def get(path: str) -> aiohttp.ClientResponse:
            resp = await http.get(api.base + path)
            await resp.read()
            return resp

        assert (await get(url)).status == 200
        await problem_of(await get(f"/api/v1/cameras/{A}/vod.m3u8?token={expired}"), 401, "expired")
        await problem_of(await get(f"/api/v1/cameras/{A}/vod.m3u8?token={token[:-4]}AAAA"), 401, "not signed")
        await problem_of(await get(f"/api/v1/cameras/{A}/vod.m3u8?token=nope!"), 401, "not one this server")
        index.revoke_token("hls-temp")
        await problem_of(await get(url), 401, "was revoked")
        await problem_of(await get(f"/api/v1/segments/{rows[1].id}/media.m4s?token={token}"), 401, "revoked")
        create_token(index, name="hls-temp", role="viewer", cameras=None)  # a new token of the same name
        await problem_of(await get(url), 401, "no longer exists")
    guard.forget(player)  # its window is audited now
    [entry] = await until(lambda: index.audit_entries(action="auth.failed", target=player), timeout=10,
                          what="the player's auth.failed entry")
    # Failed attempts count against the address; an expired link (signed by this server) does not.
    assert entry.detail["failures"] == {"forged": 1, "malformed": 1, "revoked": 2, "unknown": 1}


async def test_scope_and_bad_input(api):
    await problem_of(await api.request("POST", f"/api/v1/cameras/{B}/vod-links", "scoped",
                                       json={"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:01:00Z"}), 404)
    await problem_of(await api.request("POST", f"/api/v1/cameras/{A}/vod-links", "viewer",
                                       json={"start": "2026-01-01T00:00:00Z"}), 400, "end")
    await problem_of(await api.request("POST", f"/api/v1/cameras/{A}/vod-links", "viewer",
                                       json={"start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}),
                     413, "at most 24 h")
    await problem_of(await api.get(f"/api/v1/cameras/{A}/vod.m3u8", "viewer"), 400, "start is required")
    await problem_of(await api.get(playlist_path(A, 0, 60_000), "viewer"), 404, "recorded nothing")


async def test_the_url_token_secret_is_private_to_the_server(api):
    path = api.srv.cfg.data_dir / URL_TOKEN_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert api.srv.app[URL_SIGNER].secret == path.read_bytes()
