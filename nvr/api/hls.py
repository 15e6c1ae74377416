"""Routes of the ``hls`` tag: a VOD playlist of any range, its init and media segments, and signed links to it.

``GET /api/v1/cameras/{id}/vod.m3u8`` is the playlist (``nvr.playback.hls``).
Players can't send an Authorization header, so every URI in it carries a
signed URL token (``nvr.api.urltokens``): the camera and the range, by the
API token that asked, for ``UrlSigner.ttl_ms`` plus the range's length. A playlist fetched with a URL
token hands on that same token (a link is never extended by fetching it
again); one fetched with a bearer token gets a new one. ``POST
.../vod-links`` makes the link itself, for a player given only a URL.

A media segment is a stored segment, read with every check (``read_verified``,
as the clip and the segment's content are), its fragments rewritten onto the
playlist's timeline (``at``, which the playlist's URIs carry). Under a URL
token it is served only when it overlaps the token's range on the token's
camera (403 otherwise), and the camera scope of the signer applies as always.

Audit: every playlist (``hls.playlist``, like ``clip``: who signed, camera,
range, client) and every link made (``hls.link``). Media segments fetched
with a URL token are not audited one by one: the token was made by an audited
playlist or link, for that camera and range only. One fetched with a bearer
token is (``hls.segment``), as ``/segments/{id}/content`` is. An init holds no
footage (codec configuration only) and is not audited.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from aiohttp import web

from nvr.api.auth import new_url_token, principal_of, url_grant
from nvr.api.deps import AUDIT, INDEX
from nvr.api.footage import read_verified
from nvr.api.problem import Problem
from nvr.api.shared import (
    client_of,
    json_reply,
    not_modified,
    send_buffer,
    visible_camera,
    visible_segment,
)
from nvr.api.spec import (
    BODY,
    CAMERA,
    IDS,
    QUERY,
    SEGMENT,
    TIME_SCHEMA,
    URL_TOKEN,
    Int,
    Param,
    Pattern,
    Route,
    Time,
    check_range,
    invalid,
)
from nvr.api.urltokens import Grant
from nvr.base.errors import InvalidInput, NotFound
from nvr.base.ids import parse_segment_id, segment_id
from nvr.base.mp4 import Mp4Error, PlacedSegment, Segment, parse_segment, parse_skeleton
from nvr.base.mp4.codecs import mime_type
from nvr.base.timeline import is_gap
from nvr.base.times import ms_to_rfc3339, parse_time_ms
from nvr.playback.hls import (
    Playlist,
    config_key,
    in_range,
    init_segment,
    media_bytes,
    plan_media,
    plan_playlist,
    probes,
    render_playlist,
)
from storage.index import SegmentRow

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MAX_PLAYLIST_MS = 24 * 3_600_000  # a day of 10 s segments is 8,640 entries, about 2 MB of playlist
PROBE_CONCURRENCY = 4  # segments read at once to learn a playlist's codec configurations
# Codec configuration by (segment id, sha256): a segment's bytes never change, so neither does its key.
_CONFIGS: OrderedDict[tuple[str, str], Hashable] = OrderedDict()
_CONFIGS_MAX = 4096
FORMAT = "hls-1"  # in the ETags: bumped when the bytes served for the same segment change


def _time(name: str, value: Any) -> int:
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: an RFC 3339 time string is required", field=name)
    try:
        return parse_time_ms(value)
    except ValueError as e:
        raise InvalidInput(f"{name}: {e}", field=name) from None


def _check_length(start: int, end: int) -> None:
    if end - start > MAX_PLAYLIST_MS:
        raise Problem(413, f"a playlist may cover at most {MAX_PLAYLIST_MS // 3_600_000} h; this one asks "
                           f"{(end - start) / 3_600_000:g} h: split the range")


def _outside(grant: Grant, what: str) -> Problem:
    return Problem(403, f"{what} is outside this link (camera {grant.camera}, {ms_to_rfc3339(grant.start_ms)} to "
                        f"{ms_to_rfc3339(grant.end_ms)})")


# ---------------------------------------------------------------------- links, playlist


async def vod_link(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    body = request[BODY]
    unknown = sorted(set(body) - {"start", "end"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: start, end", field=unknown[0])
    start, end = _time("start", body.get("start")), _time("end", body.get("end"))
    if end <= start:
        raise InvalidInput("end must be after start", field="end")
    _check_length(start, end)
    who = principal_of(request)
    token, grant = await new_url_token(request, who, cid, start, end)
    await request.app[AUDIT].record("hls.link", cid, {
        "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "expires": ms_to_rfc3339(grant.expires_ms),
        "client": client_of(request)}, actor=who.actor)
    return json_reply({"camera": cid, "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end),
                       "expires": ms_to_rfc3339(grant.expires_ms),
                       "playlist": f"/api/v1/cameras/{cid}/vod.m3u8?{URL_TOKEN}={token}"}, status=201)


async def vod_playlist(request: web.Request) -> web.Response:
    q, grant = request[QUERY], url_grant(request)
    raw_id = request[IDS]["id"]
    if grant is not None:
        # Before any lookup: the link names its camera and range, so this tells its holder nothing new.
        if raw_id != grant.camera or q["start"] not in (None, grant.start_ms) or q["end"] not in (None, grant.end_ms):
            raise _outside(grant, f"this playlist (camera {raw_id}, or the range asked)")
        start, end = grant.start_ms, grant.end_ms
    cid = await visible_camera(request, raw_id, footage=True)
    if grant is None:
        for name in ("start", "end"):
            if q[name] is None:
                raise invalid(name, f"{name} is required ({Time().hint}) unless a {URL_TOKEN} is given")
        start, end = q["start"], q["end"]
        check_range(start, end)
    _check_length(start, end)
    index = request.app[INDEX]
    rows = in_range(await asyncio.to_thread(index.segments, cid, start, end, state="stored"), start, end)
    if not rows:
        raise NotFound(f"camera {cid!r} recorded nothing between {ms_to_rfc3339(start)} and {ms_to_rfc3339(end)}")
    configs = await _configs(request, rows)
    # A camera-day is 8,640 entries, ~50 ms of planning and text: off the loop, where live feeds wait.
    playlist = await asyncio.to_thread(plan_playlist, cid, rows, start, end, configs)
    who = principal_of(request)
    if grant is not None:
        token = request.query[URL_TOKEN]
    else:
        token, grant = await new_url_token(request, who, cid, start, end)
    text = await asyncio.to_thread(playlist_text, playlist, token)
    if request.method != "HEAD":  # a HEAD hands out no link: nothing to audit
        await request.app[AUDIT].record("hls.playlist", cid, {
            "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "segments": len(playlist.segments),
            "first": rows[0].id, "last": rows[-1].id, "gaps": len(playlist.gaps), "client": client_of(request),
            "via": "link" if url_grant(request) is not None else "bearer",
            "expires": ms_to_rfc3339(grant.expires_ms)}, actor=who.actor)
    # The playlist holds a live token: no cache may keep it.
    return web.Response(text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "private, no-store"})


def playlist_text(playlist: Playlist, token: str) -> str:
    """The playlist's text with this route's segment and init URIs, each carrying ``token``."""
    return render_playlist(
        playlist,
        # Relative to the playlist (…/cameras/{id}/vod.m3u8), so a reverse proxy's path prefix is kept.
        media_uri=lambda s: f"../../segments/{s.row.id}/media.m4s?at={s.at_ms}"
                            + (f"&after={s.after.seq}" if s.after is not None else "") + f"&{URL_TOKEN}={token}",
        init_uri=lambda row: f"../../segments/{row.id}/init.mp4?{URL_TOKEN}={token}")


async def _configs(request: web.Request, rows: Sequence[SegmentRow]) -> dict[int, Hashable]:
    """The codec configuration of every row ``probes`` names: from its skeleton in the index, else from
    the segment itself (read and verified); either way once, then cached."""
    gate = asyncio.Semaphore(PROBE_CONCURRENCY)
    wanted = probes(rows)
    blobs = await asyncio.to_thread(request.app[INDEX].skeletons, [rows[i] for i in wanted])

    async def probe(row: SegmentRow) -> Hashable:
        key = (row.id, row.sha256)
        if key in _CONFIGS:
            _CONFIGS.move_to_end(key)
            return _CONFIGS[key]
        if row.id in blobs:
            init = (await asyncio.to_thread(parse_skeleton, blobs[row.id])).init
        else:
            async with gate:
                data = await read_verified(request, row)
            init = (await asyncio.to_thread(parse_segment, data, partial=row.partial)).init
        _CONFIGS[key] = found = config_key(init)
        while len(_CONFIGS) > _CONFIGS_MAX:
            _CONFIGS.popitem(last=False)
        return found

    found = await asyncio.gather(*(probe(rows[i]) for i in wanted))
    return dict(zip(wanted, found, strict=True))


# ---------------------------------------------------------------------- init and media segments


def _allowed(request: web.Request, row: SegmentRow) -> SegmentRow:
    grant = url_grant(request)
    if grant is not None and not grant.covers(row.camera, row.start_ms, row.end_ms):
        raise _outside(grant, f"segment {row.id}")
    if row.state != "stored":
        raise Problem(410, f"segment {row.id} was deleted by retention ({row.state})")
    return row


async def _segment(request: web.Request) -> SegmentRow:
    """The path's segment, if the token may see it and it lies in the URL token's camera and range."""
    grant = url_grant(request)
    sid = request[IDS]["id"]
    parsed = parse_segment_id(sid)
    if grant is not None and parsed is not None and parsed[0] != grant.camera:
        raise _outside(grant, f"segment {sid}")  # before the lookup: another camera's ids stay unknown
    return _allowed(request, await visible_segment(request))


async def _before(request: web.Request, row: SegmentRow, seq: int, at: int) -> PlacedSegment:
    """The segment ``after`` names (the one before ``row`` in its sequence), as boxes: none of it is served."""
    found = await asyncio.to_thread(request.app[INDEX].segment, segment_id(row.camera, seq))
    if found is None or found.start_ms >= row.start_ms or is_gap(found.end_ms, row.start_ms):
        raise invalid("after", f"after must be the seq of the segment just before {row.id}, without a gap")
    if at < row.start_ms - found.start_ms:
        raise invalid("at", f"at {at} ms can't follow a segment {row.start_ms - found.start_ms} ms earlier")
    prev = _allowed(request, found)
    # Its skeleton (kept in the index at ingest) when there is one: only its boxes are needed.
    blobs = await asyncio.to_thread(request.app[INDEX].skeletons, [prev])
    if prev.id in blobs:
        segment = await asyncio.to_thread(parse_skeleton, blobs[prev.id])
    else:
        data = await read_verified(request, prev)
        segment = await asyncio.to_thread(parse_segment, data, partial=prev.partial)
    return PlacedSegment(prev.start_ms, prev.end_ms, segment)


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha256("\n".join(map(str, (FORMAT, *parts))).encode()).hexdigest()[:40] + '"'


async def _build(request: web.Request, row: SegmentRow, make: Callable[[Segment, bytes], bytes]) -> bytes:
    """``make(parsed segment, its bytes)`` in a thread; a segment the library can't serve is audited, 502."""
    data = await read_verified(request, row)

    def run() -> bytes:
        return make(parse_segment(data, partial=row.partial), data)

    try:
        return await asyncio.to_thread(run)
    except (Mp4Error, NotFound) as e:
        await request.app[AUDIT].system("hls.failed", row.id, {"error": str(e)})
        raise Mp4Error(f"segment {row.id} can't be served as HLS: {e}") from e


async def hls_init(request: web.Request) -> web.Response:
    row = await _segment(request)
    etag = _etag("init", row.id, row.sha256)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    body = await _build(request, row, lambda seg, _: init_segment(seg, row.start_ms, row.end_ms))
    # What a Media Source Extensions player creates its SourceBuffer with (the console's player does).
    headers["X-Codecs"] = mime_type(parse_segment(body).init)
    return web.Response(body=body, content_type="video/mp4", headers=headers)


async def hls_media(request: web.Request) -> web.Response:
    row, q = await _segment(request), request[QUERY]
    at = q["at"]
    etag = _etag("media", row.id, row.sha256, at, q["after"])  # segments never change: nor does this
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Segment": row.id}
    if not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    before = await _before(request, row, q["after"], at) if q["after"] is not None else None

    def make(seg, data) -> bytes:
        return media_bytes(plan_media(PlacedSegment(row.start_ms, row.end_ms, seg), at, before), data)

    body = await _build(request, row, make)
    if request.method != "HEAD" and url_grant(request) is None:
        # Under a bearer token this is an access like /segments/{id}/content; under a link, the audited
        # playlist or link that made the token stands for its segments.
        await request.app[AUDIT].record("hls.segment", row.id, {
            "camera": row.camera, "start": ms_to_rfc3339(row.start_ms), "end": ms_to_rfc3339(row.end_ms),
            "client": client_of(request)}, actor=principal_of(request).actor)
    return await send_buffer(request, body, headers=headers)


# ---------------------------------------------------------------------- schemas, table

TOKEN = Param(URL_TOKEN, Pattern(r"[A-Za-z0-9_-]{1,512}", "a signed URL token"),
              "A signed URL token (a playlist's URIs carry one; POST /api/v1/cameras/{id}/vod-links makes one) "
              "standing for the Authorization header, for players that can't send it; it decides when both are sent")
_START = Param("start", Time(), "Start of the range (RFC 3339); required without a token, whose range it must "
                                "then equal")
_END = Param("end", Time(), "End of the range, after start (RFC 3339); required without a token")
AT = Param("at", Int(0, 10**12), "Where the segment starts on its playlist's timeline, ms (its URI says)", default=0)
AFTER = Param("after", Int(0, 10**12), "Seq of the segment before it in its discontinuity sequence, whose times "
                                       "it continues (its URI says)")

SCHEMAS: dict[str, Any] = {
    "VodLinkCreate": {"type": "object", "additionalProperties": False, "required": ["start", "end"],
                      "properties": {"start": TIME_SCHEMA, "end": TIME_SCHEMA}},
    "VodLink": {"type": "object", "required": ["camera", "start", "end", "expires", "playlist"], "properties": {
        "camera": {"type": "string"}, "start": TIME_SCHEMA, "end": TIME_SCHEMA, "expires": TIME_SCHEMA,
        "playlist": {"type": "string", "description": "the playlist's path with its URL token"}}},
}

_MEDIA = {200: "video/mp4", 304: "", 410: "Problem", 502: "Problem"}
ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/cameras/{id}/vod-links", vod_link, "viewer",
          "A signed, short-lived link to the HLS playlist of a range (for players that can't send a token)",
          tag="hls", ids={"id": CAMERA}, body="VodLinkCreate", responses={201: "VodLink", 413: "Problem"}),
    Route("GET", "/api/v1/cameras/{id}/vod.m3u8", vod_playlist, "viewer",
          "HLS VOD playlist of a range: every stored segment, gaps as discontinuities (bearer or URL token)",
          tag="hls", ids={"id": CAMERA}, query=(_START, _END, TOKEN), url_token=True,
          responses={200: PLAYLIST_TYPE, 413: "Problem", 502: "Problem"}),
    Route("GET", "/api/v1/segments/{id}/init.mp4", hls_init, "viewer",
          "HLS init segment (ftyp + moov) of a segment's codec configuration (bearer or URL token)",
          tag="hls", ids={"id": SEGMENT}, query=(TOKEN,), url_token=True, responses=_MEDIA),
    Route("GET", "/api/v1/segments/{id}/media.m4s", hls_media, "viewer",
          "HLS media segment: a stored segment, verified, on its playlist's timeline (bearer or URL token)",
          tag="hls", ids={"id": SEGMENT}, query=(AT, AFTER, TOKEN), url_token=True, responses=_MEDIA),
)
