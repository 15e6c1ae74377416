"""``nvr verify``, ``nvr verify-bundle`` and ``nvr reindex``.

Exit codes: 0 everything verified (or the index was rebuilt from a consistent
bucket); 1 verification failed, footage not yet anchored by a checkpoint, a
bundle signed by a key that is not trusted, the bucket is inconsistent, or the
command could not run (the message says which); 2 bad arguments.

``nvr verify`` reads the index and the bucket directly (attaching to a running
server's embedded S3 if there is one) and never signs anything: footage newer
than the last checkpoint is reported ``unanchored`` (exit 1) until the server's
next checkpoint (``keys.checkpoint_interval``, and at shutdown).
``nvr verify-bundle`` needs the bundle and a trust anchor: ``--key PEM`` or
``--fingerprint HEX`` (repeatable; then only those keys are trusted), else the
signing keys of the data dir's keyring when there is one (on the node). A bundle
intact but signed by a key none of them names fails with "signatures valid but
by an untrusted key <fingerprint>": anyone can sign a bundle with a key of their
own, only a published fingerprint says whose it is. ``nvr reindex`` must run with the server stopped; with
``--force`` it first copies the old index to ``index.sqlite3.before-reindex-<time>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.base.errors import ConfigError, Conflict, NotFound, NvrError
from nvr.base.ids import is_camera_id
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from nvr.cli.context import Context
from nvr.cli.exits import FAILURE, OK
from nvr.custody.bundle import BundleReport, verify_bundle
from nvr.custody.checkpoint import load_public_pem, normalize_fingerprint, trusted_keys
from nvr.custody.reindex import reindex as rebuild_index
from nvr.custody.reindex import summarize
from nvr.custody.verify import STATUS_OK, VERDICT_OK, VERDICT_UNANCHORED, VerifyReport, verify_range
from storage.audit import AuditLog, cli_actor
from storage.errors import StorageError
from storage.keyring import Keyring


def _err(msg: str) -> None:
    print(f"nvr: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------- verify


def print_report(report: VerifyReport) -> None:
    """The report for a terminal: only what is not ok, then the counts and the verdict."""
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


def _range(args: argparse.Namespace) -> tuple[int, int]:
    try:
        start, end = parse_rfc3339(args.start), parse_rfc3339(args.end)
    except ValueError as e:
        raise ConfigError("--start/--end", str(e)) from None
    if end <= start:
        raise ConfigError("--end", "must be after --start")
    return start, end


async def verify(args: argparse.Namespace, ctx: Context) -> int:
    """Verify one camera's footage in a range against the ledger and the signed checkpoints; audited."""
    if not is_camera_id(args.camera):
        raise ConfigError("--camera", f"{args.camera!r} is not a camera id")
    start, end = _range(args)
    ctx.require_index("nothing recorded with this data dir; `nvr reindex` rebuilds it")
    backend = await ctx.backend()
    if not await asyncio.to_thread(backend.index.has_ledger, args.camera):
        raise NotFound(f"camera {args.camera!r} has no ledger in this index")
    try:
        report = await verify_range(backend.store, backend.index, backend.keyring, args.camera, start, end)
    except StorageError as e:  # S3 or the index failed under it: no verdict either way
        raise NvrError(f"verification could not complete: {e}", kind=e.kind) from e
    await AuditLog(backend.index).record("verify", args.camera, report.audit_detail(), actor=cli_actor())
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print_report(report)
    if report.verdict == VERDICT_OK:
        return OK
    if report.verdict == VERDICT_UNANCHORED:
        _err("no tampering found, but some footage is newer than the last signed checkpoint; the server signs one "
             "every keys.checkpoint_interval and at shutdown: verify again after it")
    else:
        _err("VERIFICATION FAILED")
    return FAILURE


# ---------------------------------------------------------------------- verify-bundle


def _anchors(args: argparse.Namespace, ctx: Context) -> tuple[dict[str, Ed25519PublicKey], list[str], str]:
    """The trust anchors: ``--key``/``--fingerprint`` if given, else the local keyring's keys; and where from."""
    keys: dict[str, Ed25519PublicKey] = {}
    for i, path in enumerate(args.key or ()):
        try:
            keys[f"key{i}"] = load_public_pem(path.read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--key {path}", str(e)) from None
    # The command tree gains --fingerprint alongside --key; until then it is simply absent.
    fingerprints = list(args.fingerprint or ())
    for fp in fingerprints:
        try:
            normalize_fingerprint(fp)
        except ValueError as e:
            raise ConfigError("--fingerprint", str(e)) from None
    if keys or fingerprints:
        return keys, fingerprints, "the keys given on the command line"
    ring_dir = ctx.config.keyring_dir
    if not (ring_dir / "signing").is_dir():
        return {}, [], ""
    try:
        ring = Keyring.open(ring_dir, create=False)
    except (NvrError, OSError) as e:  # someone else's or a broken keyring: say so, trust nothing from it
        _err(f"the keyring {ring_dir} can't be read ({e}): no local key is trusted")
        return {}, [], ""
    return trusted_keys(ring), [], f"the keyring {ring_dir}"


def print_bundle_report(report: BundleReport, source: str) -> None:
    """The checks, the signer and the verdict, for a terminal."""
    print(f"bundle {report.path}: export {report.export_id}, case {report.case_id!r}, {report.segments} segment(s)")
    for c in report.checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if report.fingerprint:
        print(f"signed by key {report.key_id}, fingerprint {report.fingerprint}")
    if report.ok:
        print(f"bundle verified: every key that signed it is trusted ({source})")
    elif report.untrusted:
        print(f"signatures valid but by an untrusted key {', '.join(report.untrusted_keys)}")
        print("  compare it with the fingerprint the node's operator published (`nvr keys list` on the node, "
              "GET /api/v1/keys), then run again with --fingerprint <that fingerprint>, --key <its PEM>, "
              "or on the node with its data dir")
    else:
        print("BUNDLE VERIFICATION FAILED")


async def verify_bundle_file(args: argparse.Namespace, ctx: Context) -> int:
    """Check an export bundle offline; ok only if signed by a trusted key (``--key``, ``--fingerprint``, keyring)."""
    if not args.bundle.exists():
        raise ConfigError(str(args.bundle), "does not exist")
    keys, fingerprints, source = _anchors(args, ctx)
    report = await asyncio.to_thread(verify_bundle, args.bundle, trusted=keys, fingerprints=fingerprints)
    if args.json:
        print(json.dumps({**report.to_json(), "trusted_keys_from": source or None}, indent=2, sort_keys=True))
    else:
        print_bundle_report(report, source)
    return OK if report.ok else FAILURE


# ---------------------------------------------------------------------- reindex


async def reindex(args: argparse.Namespace, ctx: Context) -> int:
    """Rebuild the index and ledger from the bucket; refuses a non-empty index without ``--force``."""
    cfg = ctx.config
    backend = await ctx.backend()
    index = backend.index
    n = sum(await asyncio.to_thread(index.maintenance.counts))
    if n and not args.force:
        raise Conflict(f"the index {index.describe()} is not empty; `nvr reindex --force` replaces it with what the "
                       "bucket holds (keeping a copy of the old one)")
    if n and index.dialect == "sqlite":  # PostgreSQL: the operator's own backups (pg_dump) are the copy
        stamp = ms_to_rfc3339(now_ms()).replace(":", "").replace("-", "")
        backup = cfg.index_path.with_name(f"{cfg.index_path.name}.before-reindex-{stamp}")
        await asyncio.to_thread(index.maintenance.backup_to, backup)
        print(f"old index copied to {backup}", file=sys.stderr)
    report = await rebuild_index(backend.store, index, backend.keyring, force=args.force)
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
    return OK if report.ok else FAILURE
