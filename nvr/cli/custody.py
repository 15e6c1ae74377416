"""``nvr verify``, ``nvr verify-bundle`` and ``nvr reindex``.

Exit codes: 0 everything verified (or the index was rebuilt from a consistent
bucket); 1 verification failed, footage not yet anchored by a checkpoint, the
bucket is inconsistent, or the command could not run (the message says which);
2 bad arguments.

``nvr verify`` reads the index and the bucket directly (attaching to a running
server's embedded S3 if there is one) and never signs anything: footage newer
than the last checkpoint is reported ``unanchored`` (exit 1) until the server's
next checkpoint (``keys.checkpoint_interval``, and at shutdown).
``nvr verify-bundle`` needs nothing but the bundle (``--key`` pins the key it
must be signed with). ``nvr reindex`` must run with the server stopped; with
``--force`` it first copies the old index to ``index.sqlite3.before-reindex-<time>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from nvr.base.ids import is_camera_id
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from nvr.config.settings import Config
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import load_public_pem
from nvr.custody.verify import STATUS_OK, VERDICT_OK, VERDICT_UNANCHORED, VerifyReport, verify_range
from nvr.server.backend import open_backend
from storage.audit import AuditLog, cli_actor
from storage.errors import StorageError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
COMMANDS = ("verify", "verify-bundle", "reindex")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("verify", parents=[common],
                       help="verify a camera's footage in a time range against the ledger and signed checkpoints")
    s.add_argument("--camera", required=True, help="camera id")
    s.add_argument("--start", required=True, help="RFC 3339 time, e.g. 2026-11-29T13:00:00Z")
    s.add_argument("--end", required=True, help="RFC 3339 time, after --start")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")

    s = sub.add_parser("verify-bundle", parents=[common], help="check an evidence export bundle offline")
    s.add_argument("bundle", type=Path, help="the bundle's .zip (or its unpacked directory)")
    s.add_argument("--key", type=Path, action="append", default=None,
                   help="PEM public key the bundle must be signed with (repeatable); default: its own public.pem")
    s.add_argument("--json", action="store_true", help="print the checks as JSON")

    s = sub.add_parser("reindex", parents=[common],
                       help="rebuild the segment index and ledger from the bucket (server stopped)")
    s.add_argument("--force", action="store_true", help="replace a non-empty index (a copy is kept)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.command == "verify":
        return asyncio.run(_verify(cfg, args))
    if args.command == "verify-bundle":
        return _verify_bundle(args)
    if args.command == "reindex":
        return asyncio.run(_reindex(cfg, args))
    raise ValueError(f"not a custody command: {args.command}")


def _err(msg: str) -> None:
    print(f"nvr: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------- verify


def print_report(report: VerifyReport) -> None:
    c = report.counts()
    print(f"cameras {', '.join(report.cameras)}, {ms_to_rfc3339(report.start_ms)} .. {ms_to_rfc3339(report.end_ms)}")
    for s in report.segments:
        if s.status == STATUS_OK:
            continue
        start = ms_to_rfc3339(s.start_ms) if s.start_ms is not None else "?"
        line = f"  {s.id:<24} {start}  {s.status.upper() if s.status in ('tampered', 'missing') else s.status}"
        if s.failed:
            line += f" ({', '.join(s.checks)}): {s.failed[0].detail}"
        if s.rule is not None or s.deleted_at is not None:
            line += f" (rule {s.rule}, deleted {s.deleted_at})"
        print(line)
    for g in report.gaps:
        print(f"  gap {g.camera} {ms_to_rfc3339(g.start_ms)} .. {ms_to_rfc3339(g.end_ms)} "
              f"({(g.end_ms - g.start_ms) / 1000:g} s)")
    for p in report.problems:
        print(f"  PROBLEM {p.camera} ({p.check}){f' seq {p.seq}' if p.seq is not None else ''}: {p.detail}")
    counts = ", ".join(f"{v} {k}" for k, v in c.items() if v) or "none"
    print(f"{len(report.segments)} segment(s): {counts}; {len(report.gaps)} gap(s); "
          f"{len(report.problems)} problem(s)")
    print(f"verdict: {report.verdict.upper()}")


async def _verify(cfg: Config, args: argparse.Namespace) -> int:
    if not is_camera_id(args.camera):
        _err(f"--camera: {args.camera!r} is not a camera id")
        return EXIT_USAGE
    try:
        start, end = parse_rfc3339(args.start), parse_rfc3339(args.end)
    except ValueError as e:
        _err(f"--start/--end: {e}")
        return EXIT_USAGE
    if end <= start:
        _err("--end must be after --start")
        return EXIT_USAGE
    if not cfg.index_path.exists():
        _err(f"no index at {cfg.index_path} (nothing recorded with this data dir; `nvr reindex` rebuilds it)")
        return EXIT_FAIL
    async with AsyncExitStack() as stack:
        backend = await open_backend(cfg, stack, may_attach=True, create_keys=False)
        known = await asyncio.to_thread(
            backend.index.query, "SELECT 1 FROM ledger WHERE camera = ? LIMIT 1", (args.camera,))
        if not known:
            _err(f"camera {args.camera!r} has no ledger in this index")
            return EXIT_FAIL
        try:
            report = await verify_range(backend.store, backend.index, backend.keyring, args.camera, start, end)
        except StorageError as e:
            _err(f"verification could not complete: {e}")
            return EXIT_FAIL
        await AuditLog(backend.index).record("verify", args.camera, report.audit_detail(), actor=cli_actor())
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print_report(report)
    if report.verdict == VERDICT_OK:
        return EXIT_OK
    if report.verdict == VERDICT_UNANCHORED:
        _err("no tampering found, but some footage is newer than the last signed checkpoint; the server signs one "
             "every keys.checkpoint_interval and at shutdown: verify again after it")
    else:
        _err("VERIFICATION FAILED")
    return EXIT_FAIL


# ---------------------------------------------------------------------- verify-bundle


def _verify_bundle(args: argparse.Namespace) -> int:
    if not args.bundle.exists():
        _err(f"{args.bundle} does not exist")
        return EXIT_USAGE
    trusted = None
    if args.key:
        trusted = {}
        for i, path in enumerate(args.key):
            try:
                trusted[f"key{i}"] = load_public_pem(path.read_bytes())
            except (OSError, ValueError) as e:
                _err(f"--key {path}: {e}")
                return EXIT_USAGE
    report = verify_bundle(args.bundle, trusted=trusted)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(f"bundle {args.bundle}: export {report.export_id}, case {report.case_id!r}, "
              f"{report.segments} segment(s)")
        for c in report.checks:
            print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        if report.fingerprint:
            print(f"signed by key {report.key_id}, fingerprint {report.fingerprint}"
                  + ("" if trusted else ": compare it with the node's published key (GET /api/v1/keys)"))
        print("bundle verified" if report.ok else "BUNDLE VERIFICATION FAILED")
    return EXIT_OK if report.ok else EXIT_FAIL


# ---------------------------------------------------------------------- reindex


async def _reindex(cfg: Config, args: argparse.Namespace) -> int:
    from nvr.custody.reindex import ReindexRefused, reindex, summarize

    async with AsyncExitStack() as stack:
        backend = await open_backend(cfg, stack, may_attach=True, create_keys=False)
        index = backend.index
        n = await asyncio.to_thread(index.query, "SELECT (SELECT COUNT(*) FROM ledger) + (SELECT COUNT(*) FROM segments)")
        if n[0][0] and not args.force:
            _err(f"the index {cfg.index_path} is not empty; `nvr reindex --force` replaces it with what the bucket "
                 "holds (keeping a copy of the old one)")
            return EXIT_FAIL
        if n[0][0]:
            stamp = ms_to_rfc3339(now_ms()).replace(":", "").replace("-", "")
            backup = cfg.index_path.with_name(f"{cfg.index_path.name}.before-reindex-{stamp}")
            await asyncio.to_thread(index.query, "VACUUM INTO ?", (str(backup),))
            print(f"old index copied to {backup}", file=sys.stderr)
        try:
            report = await reindex(backend.store, index, backend.keyring, force=args.force)
        except ReindexRefused as e:
            _err(str(e))
            return EXIT_FAIL
        await AuditLog(index).record("index.rebuild", "index", {
            "cameras": len(report.cameras), "lacked": report.lacked.count, "contradicted": report.contradicted.count,
            "dropped": report.dropped.count, "problems": report.problems.count, "force": bool(args.force),
        }, actor=cli_actor())
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for line in summarize(report):
            print(line)
        print("index rebuilt" + ("" if report.ok else "; the bucket is inconsistent (see PROBLEMS)"))
    return EXIT_OK if report.ok else EXIT_FAIL
