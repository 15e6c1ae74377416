"""``nvr segments`` and ``nvr fetch``: what was recorded, and one segment back as its original MP4."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from nvr.base.errors import ConfigError, NotFound
from nvr.base.times import ms_to_rfc3339, parse_rfc3339
from nvr.cli.context import Context
from nvr.cli.exits import OK
from storage.audit import AuditLog, cli_actor
from storage.errors import IntegrityError
from storage.retrieve import open_segment


def _time_arg(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as e:
        raise ConfigError(name, str(e)) from None


async def segments(args: argparse.Namespace, ctx: Context) -> int:
    """List a data dir's segments, one line (or JSON object) each."""
    ctx.require_index()
    start, end = _time_arg("--start", args.start), _time_arg("--end", args.end)
    if start is not None and end is not None and end <= start:
        raise ConfigError("--end", "must be after --start")
    index = ctx.index()
    rows = await asyncio.to_thread(index.segments, args.camera, start, end)
    for r in rows:
        if args.json:
            print(json.dumps({
                "id": r.id, "camera": r.camera, "seq": r.seq, "start": ms_to_rfc3339(r.start_ms),
                "end": ms_to_rfc3339(r.end_ms), "duration": r.duration_ms / 1000, "size": r.size,
                "sha256": r.sha256, "object_key": r.object_key, "object_sha256": r.object_sha256,
                "partial": r.partial, "key_id": r.key_id, "record_hash": r.record_hash,
            }, sort_keys=True))
        else:
            flag = " partial" if r.partial else ""
            print(f"{r.id:<24} {ms_to_rfc3339(r.start_ms)}  {r.duration_ms / 1000:6.2f}s {r.size:>10} "
                  f"{r.sha256[:16]}{flag}")
    if not args.json:
        print(f"{len(rows)} segment(s)", file=sys.stderr)
    return OK


async def fetch(args: argparse.Namespace, ctx: Context) -> int:
    """Download, decrypt and verify one segment into ``--output``; a failed check is audited, then raised."""
    backend = await ctx.backend()
    row = await asyncio.to_thread(backend.index.segment, args.segment)
    if row is None:
        raise NotFound(f"no segment {args.segment!r} in the index (see `nvr segments`)")
    audit = AuditLog(backend.index)
    try:
        data = await backend.store.run(open_segment, backend.store, backend.index, backend.keyring, row)
    except IntegrityError as e:
        await audit.record("segment.verify_failed", row.id, {"check": e.check, "error": str(e)}, actor=cli_actor())
        raise
    tmp = args.output.with_name(f".{args.output.name}.part")
    await asyncio.to_thread(tmp.write_bytes, data)
    os.replace(tmp, args.output)
    await audit.record("segment.fetch", row.id, {
        "start": ms_to_rfc3339(row.start_ms), "end": ms_to_rfc3339(row.end_ms), "output": str(args.output),
    }, actor=cli_actor())
    print(f"{args.output}: {len(data)} bytes, SHA-256 {row.sha256} matches the ledger", file=sys.stderr)
    return OK
