"""Routes of the ``footage`` tag: a camera's segments and timeline, one segment's bytes, clips of a range.

Footage of a deleted camera stays reachable while it has segments. A segment's
content is decrypted and verified against the ledger before a byte is sent; one
that fails is audited (``segment.verify_failed``) and answered 502. A clip is
stitched from the stored fragments (docs/playback.md) and streamed as each segment
is read, so a failure past the first byte can only cut the connection short
(audited as ``clip.failed``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web

from nvr.api.auth import principal_of
from nvr.api.deps import AUDIT, CLIPS, INDEX, READ_SEGMENT
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
    CAMERA,
    CAMERA_ID_SCHEMA,
    CURSOR,
    END,
    IDS,
    LIMIT,
    QUERY,
    SEGMENT,
    START,
    TIME_SCHEMA,
    Route,
)
from nvr.base.errors import NotFound
from nvr.base.timeline import merge_ranges
from nvr.base.times import ms_to_rfc3339, parse_rfc3339
from nvr.playback.clip import ClipError, ClipPlan, clip_etag, plan_clip, prepare_clip, write_clip
from storage.errors import IntegrityError, StorageError
from storage.index import SegmentRow

log = logging.getLogger("nvr.api")


def segment_json(r: SegmentRow) -> dict[str, Any]:
    """A segment's metadata and hashes, with the URL of its content."""
    return {
        "id": r.id, "camera": r.camera, "seq": r.seq, "start": ms_to_rfc3339(r.start_ms),
        "end": ms_to_rfc3339(r.end_ms), "duration": r.duration_ms / 1000, "partial": r.partial, "size": r.size,
        "sha256": r.sha256, "object_key": r.object_key, "object_size": r.object_size,
        "object_sha256": r.object_sha256, "key_id": r.key_id, "record_hash": r.record_hash, "state": r.state,
        "content_url": f"/api/v1/segments/{r.id}/content",
    }


# ---------------------------------------------------------------------- segments, timeline


async def list_segments(request: web.Request) -> web.Response:
    q = request[QUERY]
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    limit = q["limit"]
    rows = await asyncio.to_thread(request.app[INDEX].segments, cid, q["start"], q["end"],
                                   limit=limit + 1, after_start_ms=q["cursor"])
    more = len(rows) > limit
    rows = rows[:limit]
    return json_reply({"segments": [segment_json(r) for r in rows],
                       "next_cursor": str(rows[-1].start_ms) if more else None})

MAX_CORRECTIONS = 1000  # placement corrections a timeline lists (a camera re-anchored more often is broken)


async def timeline(request: web.Request) -> web.Response:
    start, end = request[QUERY]["start"], request[QUERY]["end"]
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    # Footage deleted by retention is no longer recorded footage: it shows as a gap, and where it was is said.
    index = request.app[INDEX]
    spans = await asyncio.to_thread(index.spans, cid, start, end, state="stored")
    recorded, gaps = merge_ranges(spans, start, end)
    deleted, _ = merge_ranges(await asyncio.to_thread(index.spans, cid, start, end, state="deleted"), start, end)
    return json_reply({
        "camera": cid, "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "recorded": _iso(recorded),
        "gaps": _iso(gaps), "deleted": _iso(deleted),
        "recorded_seconds": sum(e - s for s, e in recorded) / 1000,
        "corrections": await _corrections(request, cid, start, end),
    })


def _iso(ranges: list[tuple[int, int]]) -> list[dict[str, str]]:
    return [{"start": ms_to_rfc3339(s), "end": ms_to_rfc3339(e)} for s, e in ranges]


async def _corrections(request: web.Request, cid: str, start: int, end: int) -> list[dict[str, Any]]:
    """The segments in range where the camera's run was re-anchored on the wall clock (docs/timing.md)."""
    # The event is audited when its segment is stored, so never before the segment's start.
    entries = await asyncio.to_thread(request.app[INDEX].audit_entries, action="recording.placement_corrected",
                                      target=cid, start_ms=start, limit=MAX_CORRECTIONS)
    marks = []
    for e in entries:
        d = e.detail
        try:
            s_ms, e_ms = parse_rfc3339(d["start"]), parse_rfc3339(d["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if e_ms > start and s_ms < end:
            marks.append({"segment": d.get("segment"), "start": d["start"], "end": d["end"],
                          "seconds": d.get("correction_seconds")})
    return marks


async def get_segment(request: web.Request) -> web.Response:
    return json_reply(segment_json(await visible_segment(request)))


async def read_verified(request: web.Request, row: SegmentRow) -> bytes:
    """The segment's original bytes; a failed check is audited and answered 502 naming the check."""
    try:
        return await request.app[READ_SEGMENT](row)
    except IntegrityError as e:
        await request.app[AUDIT].system("segment.verify_failed", row.id, {"check": e.check, "error": str(e)})
        raise IntegrityError(f"segment {row.id} failed verification ({e.check}): {e}", segment=row.id,
                             check=e.check) from None


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """First and last byte of a single ``Range: bytes=`` header (416 when it is not one inside ``size``)."""
    m = _RANGE_RE.match(header.strip())
    first, last = (m.group(1), m.group(2)) if m else ("", "")
    if not m or (first == "" and last == ""):
        raise Problem(416, f"Range {header!r} is not a single bytes range such as bytes=0-1023",
                      headers={"Content-Range": f"bytes */{size}"})
    if first == "":
        a, b = max(0, size - int(last)), size - 1
    else:
        a, b = int(first), min(int(last), size - 1) if last else size - 1
    if a >= size or a > b:
        raise Problem(416, f"Range {header!r} is outside the {size} bytes of this resource",
                      headers={"Content-Range": f"bytes */{size}"})
    return a, b


async def segment_content(request: web.Request) -> web.Response:
    row = await visible_segment(request)
    if row.state != "stored":
        raise Problem(410, f"segment {row.id} was deleted by retention ({row.state}); its ledger record and "
                           f"tombstone remain: GET /api/v1/segments/{row.id}/verify shows the rule and time")
    rng = request.headers.get("Range")
    if not_modified(request, f'"{row.sha256}"'):
        return web.Response(status=304, headers={"ETag": f'"{row.sha256}"', "Accept-Ranges": "bytes"})
    data = await read_verified(request, row)
    size, status, headers = len(data), 200, {
        "X-Content-SHA256": row.sha256, "Accept-Ranges": "bytes", "ETag": f'"{row.sha256}"',
        "Content-Disposition": f'inline; filename="{row.id.replace(":", "_")}.mp4"',
    }
    body = data
    if rng:
        a, b = _byte_range(rng, size)
        body, status = memoryview(data)[a:b + 1], 206
        headers["Content-Range"] = f"bytes {a}-{b}/{size}"
    await request.app[AUDIT].record("segment.content", row.id, {
        "camera": row.camera, "start": ms_to_rfc3339(row.start_ms), "end": ms_to_rfc3339(row.end_ms),
        "client": client_of(request), "range": rng,
    }, actor=principal_of(request).actor)
    return await send_buffer(request, body, status=status, headers=headers)


# ---------------------------------------------------------------------- clips


async def clip(request: web.Request) -> web.StreamResponse:
    start, end = request[QUERY]["start"], request[QUERY]["end"]
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    settings = request.app[CLIPS]
    limit = settings.max_seconds
    if (end - start) / 1000 > limit:
        raise Problem(413, f"a clip may last at most {limit:g} s (server.max_clip); this one asks "
                           f"{(end - start) / 1000:g} s: split the range")
    rows = await asyncio.to_thread(request.app[INDEX].segments, cid, start, end, state="stored")
    plan = plan_clip(rows, start, end)
    if not plan.segments:
        raise NotFound(f"camera {cid!r} recorded nothing between {ms_to_rfc3339(start)} and {ms_to_rfc3339(end)}")
    etag = clip_etag(plan)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
    if not_modified(request, etag):
        return web.Response(status=304, headers=headers)

    with settings.concurrency.hold(principal_of(request).actor):
        return await _serve_clip(request, plan, etag, headers)


async def _serve_clip(request: web.Request, plan: ClipPlan, etag: str, headers: dict[str, str]) -> web.StreamResponse:
    """Prepare the clip of ``plan`` and answer it (HEAD, a Range or the whole), audited."""
    settings, audit, index = request.app[CLIPS], request.app[AUDIT], request.app[INDEX]
    cid, start, end = plan.camera, plan.start_ms, plan.end_ms
    async def read_for_clip(row: SegmentRow) -> bytes:
        try:
            return await read_verified(request, row)
        except StorageError as e:
            raise ClipError(f"segment {row.id}: {e}", segment=row.id) from e

    try:
        prepared = await prepare_clip(plan, read_segment=read_for_clip, tmp_dir=settings.tmp_dir,
                                      skeletons=lambda rows: asyncio.to_thread(index.skeletons, rows))
    except ClipError as e:
        await audit.system("clip.failed", cid, {"error": str(e)})
        raise
    try:
        size, rng = prepared.size, request.headers.get("Range")
        first, last, status = 0, size - 1, 200
        if rng:
            first, last = _byte_range(rng, size)
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        gaps = ", ".join(f"{ms_to_rfc3339(a)}/{ms_to_rfc3339(b)}" for a, b in plan.gaps)
        used = prepared.used
        headers.update({
            "Content-Type": "video/mp4",
            "Content-Length": str(last - first + 1),
            "Content-Disposition": f'inline; filename="{cid}_{ms_to_rfc3339(start)}.mp4"'.replace(":", "-"),
            "X-Clip-Segments": str(len(used)),
            "X-Clip-Gaps": gaps or "none",
            "X-Clip-Recorded-Start": ms_to_rfc3339(max(start, used[0].start_ms)),
        })
        if prepared.truncated:
            headers["X-Clip-Truncated"] = prepared.truncated
        if request.method == "HEAD":  # the size and validators, no footage delivered: nothing to audit
            return web.Response(status=status, headers=headers)
        await audit.record("clip", cid, {
            "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "segments": [r.id for r in used],
            "gaps": len(plan.gaps), "client": client_of(request), "range": rng, "truncated": prepared.truncated,
        }, actor=principal_of(request).actor)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        try:
            await write_clip(prepared, resp.write, first=first, last=last)
        except (ClipError, OSError) as e:
            # The status line is gone already: end the connection without the final chunk, so the client
            # sees a truncated transfer rather than a complete-looking clip.
            log.error("clip of %s %s..%s failed mid-stream: %s", cid, ms_to_rfc3339(start), ms_to_rfc3339(end), e)
            await audit.system("clip.failed", cid, {"error": str(e)})
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp
    finally:
        prepared.close()


SCHEMAS: dict[str, Any] = {
    "Segment": {"type": "object", "properties": {
        "id": {"type": "string"}, "camera": CAMERA_ID_SCHEMA, "seq": {"type": "integer"}, "start": TIME_SCHEMA,
        "end": TIME_SCHEMA, "duration": {"type": "number"}, "partial": {"type": "boolean"},
        "size": {"type": "integer"}, "sha256": {"type": "string"}, "object_key": {"type": "string"},
        "object_sha256": {"type": "string"}, "key_id": {"type": "string"}, "record_hash": {"type": "string"},
        "state": {"type": "string"}, "content_url": {"type": "string"}}},
}

_RANGE = (START.as_required(), END.as_required())
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/cameras/{id}/segments", list_segments, "viewer", "Segments of a camera, paged",
          tag="footage", ids={"id": CAMERA}, query=(START, END, LIMIT, CURSOR)),
    Route("GET", "/api/v1/cameras/{id}/timeline", timeline, "viewer", "Recorded ranges and gaps",
          tag="footage", ids={"id": CAMERA}, query=_RANGE),
    Route("GET", "/api/v1/cameras/{id}/clip.mp4", clip, "viewer",
          "One fragmented MP4 of the range, stitched from the stored fragments (Range, ETag, HEAD)", tag="footage", ids={"id": CAMERA},
          query=_RANGE, responses={200: "video/mp4", 413: "Problem", 429: "Problem"}),
    Route("GET", "/api/v1/segments/{id}", get_segment, "viewer", "Segment metadata and hashes", tag="footage",
          ids={"id": SEGMENT}),
    Route("GET", "/api/v1/segments/{id}/content", segment_content, "viewer",
          "The original segment (decrypted and verified), with Range support", tag="footage",
          ids={"id": SEGMENT},
          responses={200: "video/mp4", 206: "video/mp4", 410: "Problem", 416: "Problem", 502: "Problem"}),
)
