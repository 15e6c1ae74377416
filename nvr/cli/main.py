"""The ``nvr`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from nvr import __version__
from nvr.base.errors import ConfigError, NvrError
from nvr.base.redact import redact_text
from nvr.base.times import ms_to_rfc3339, parse_rfc3339
from nvr.cli import custody as cli_custody
from nvr.cli import retention as cli_retention
from nvr.config.settings import Config, load_config, parse_listen
from nvr.server.backend import open_backend
from storage.audit import AuditLog, cli_actor
from storage.errors import IntegrityError, KeyringError, StorageError
from storage.retrieve import open_segment

EXIT_FAIL, EXIT_CONFIG, EXIT_INTEGRITY = 1, 2, 3


class RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with URL credentials in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDKs log every retry at WARNING; our own lines already say what matters.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=os.environ.get("NVR_CONFIG") or None,
                        help="TOML config file (default: $NVR_CONFIG, else built-in defaults)")
    common.add_argument("--data-dir", type=Path, default=None,
                        help="directory of the index, keyring, spool and embedded S3 (overrides server.data_dir)")
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    p = argparse.ArgumentParser(prog="nvr", description="Evidence-grade network video recorder.")
    p.add_argument("--version", action="version", version=f"nvr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="record every enabled camera and serve the API")
    s.add_argument("--listen", default=None, help="HOST:PORT for the HTTP API (overrides server.listen)")
    s.add_argument("--demo", action="store_true", help="add two synthetic cameras when none are configured")

    s = sub.add_parser("segments", parents=[common], help="list recorded segments from the index")
    s.add_argument("--camera", default=None)
    s.add_argument("--start", default=None, help="RFC 3339 time, e.g. 2026-11-29T13:00:00Z")
    s.add_argument("--end", default=None, help="RFC 3339 time")
    s.add_argument("--json", action="store_true", help="one JSON object per line")

    s = sub.add_parser("fetch", parents=[common], help="download, decrypt and verify one segment")
    s.add_argument("segment", help="segment id, as `nvr segments` lists it (camera:seq)")
    s.add_argument("-o", "--output", type=Path, required=True, help="file to write the original MP4 to")

    s = sub.add_parser("keys", parents=[common], help="list or rotate keys")
    s.add_argument("action", choices=["list", "rotate-kek", "rotate-signing"])

    s = sub.add_parser("token", parents=[common], help="create, revoke or list API tokens")
    tsub = s.add_subparsers(dest="token_action", required=True)
    t = tsub.add_parser("create", parents=[common], help="create a token; prints it once on stdout")
    t.add_argument("--name", required=True)
    t.add_argument("--role", required=True, choices=["viewer", "evidence", "admin"])
    t.add_argument("--cameras", default=None, help="comma-separated camera ids the token is limited to")
    t = tsub.add_parser("revoke", parents=[common], help="revoke a token by name")
    t.add_argument("name")
    tsub.add_parser("list", parents=[common], help="list tokens (never the tokens themselves)")

    cli_custody.add_parsers(sub, common)
    cli_retention.add_parsers(sub, common)

    sub.add_parser("check-config", parents=[common], help="validate the config and print a summary")
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    listen = parse_listen(args.listen, "--listen") if getattr(args, "listen", None) else None
    return cfg.with_overrides(data_dir=args.data_dir.resolve() if args.data_dir else None, listen=listen)


def _time_arg(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as e:
        raise ConfigError(name, str(e)) from None


async def _segments(cfg: Config, args: argparse.Namespace) -> int:
    from storage.index import Index

    if not cfg.index_path.exists():
        print(f"nvr: no index at {cfg.index_path} (nothing recorded with this data dir yet)", file=sys.stderr)
        return EXIT_FAIL
    start, end = _time_arg("--start", args.start), _time_arg("--end", args.end)
    if start is not None and end is not None and end <= start:
        raise ConfigError("--end", "must be after --start")
    index = Index(cfg.index_path)
    try:
        rows = await asyncio.to_thread(index.segments, args.camera, start, end)
    finally:
        index.close()
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
    return 0


async def _fetch(cfg: Config, args: argparse.Namespace) -> int:
    async with AsyncExitStack() as stack:
        backend = await open_backend(cfg, stack, may_attach=True, create_keys=False)
        row = await asyncio.to_thread(backend.index.segment, args.segment)
        if row is None:
            print(f"nvr: no segment {args.segment!r} in the index (see `nvr segments`)", file=sys.stderr)
            return EXIT_FAIL
        audit = AuditLog(backend.index)
        try:
            data = await backend.store.run(open_segment, backend.store, backend.index, backend.keyring, row)
        except IntegrityError as e:
            await audit.record("segment.verify_failed", row.id, {"check": e.check, "error": str(e)}, actor=cli_actor())
            print(f"nvr: VERIFICATION FAILED ({e.check}): {e}", file=sys.stderr)
            return EXIT_INTEGRITY
        tmp = args.output.with_name(f".{args.output.name}.part")
        await asyncio.to_thread(tmp.write_bytes, data)
        os.replace(tmp, args.output)
        await audit.record("segment.fetch", row.id, {
            "start": ms_to_rfc3339(row.start_ms), "end": ms_to_rfc3339(row.end_ms), "output": str(args.output),
        }, actor=cli_actor())
        print(f"{args.output}: {len(data)} bytes, SHA-256 {row.sha256} matches the ledger", file=sys.stderr)
    return 0


def _keys(cfg: Config, args: argparse.Namespace) -> int:
    from storage.keyring import Keyring

    ring = Keyring.open(cfg.keyring_dir, create=args.action != "list")
    if args.action == "rotate-kek":
        print(ring.rotate_kek())
    elif args.action == "rotate-signing":
        print(ring.rotate_signing_key())
    else:
        for kid in ring.kek_ids:
            print(f"kek     {kid}{'  (current)' if kid == ring.current_kek_id else ''}")
        for key in ring.signing_keys:
            print(f"signing {key.key_id}{'  (current)' if key is ring.signing_key else ''}")
    return 0


def _token(cfg: Config, args: argparse.Namespace) -> int:
    from nvr.api.auth import create_token
    from nvr.base.ids import is_camera_id
    from storage.index import Index

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    index = Index(cfg.index_path)
    audit = AuditLog(index)
    try:
        if args.token_action == "create":
            cameras = None
            if args.cameras is not None:
                cameras = sorted({c.strip() for c in args.cameras.split(",") if c.strip()})
                bad = [c for c in cameras if not is_camera_id(c)]
                if not cameras or bad:
                    raise ConfigError("--cameras", f"{', '.join(bad) or '(empty)'}: not camera ids")
            try:
                token = create_token(index, name=args.name, role=args.role, cameras=cameras)
            except (ValueError, StorageError) as e:
                raise ConfigError("--name", str(e)) from None
            asyncio.run(audit.record("token.create", args.name, {"role": args.role, "cameras": cameras},
                                     actor=cli_actor()))
            print(token)
            print(f"token {args.name!r} ({args.role}) created; it is shown only this once", file=sys.stderr)
        elif args.token_action == "revoke":
            if not index.revoke_token(args.name):
                print(f"nvr: no live token named {args.name!r}", file=sys.stderr)
                return EXIT_FAIL
            asyncio.run(audit.record("token.revoke", args.name, {}, actor=cli_actor()))
            print(f"token {args.name!r} revoked", file=sys.stderr)
        else:
            for name, role, cams, created, revoked in index.tokens():
                state = f"revoked {ms_to_rfc3339(revoked)}" if revoked else "live"
                scope = ",".join(cams) if cams is not None else "all cameras"
                print(f"{name:<24} {role:<9} {scope:<30} created {ms_to_rfc3339(created)}  {state}")
    finally:
        index.close()
    return 0


def _check_config(cfg: Config) -> int:
    print(f"config ok: data dir {cfg.data_dir}, listen {cfg.server.listen_host}:{cfg.server.listen_port}, "
          f"storage {cfg.storage.endpoint or 'embedded SeaweedFS'} bucket {cfg.storage.bucket}")
    for cam in cfg.cameras:
        print(f"  camera {cam.id}: {cam.display_url}{'' if cam.enabled else ' (disabled)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = _config(args)
        if args.command == "serve":
            from nvr.server.app import serve

            asyncio.run(serve(cfg, demo=args.demo))
            return 0
        if args.command == "segments":
            return asyncio.run(_segments(cfg, args))
        if args.command == "fetch":
            return asyncio.run(_fetch(cfg, args))
        if args.command == "keys":
            return _keys(cfg, args)
        if args.command == "token":
            return _token(cfg, args)
        if args.command in cli_custody.COMMANDS:
            return cli_custody.run(cfg, args)
        if args.command == "retention":
            return cli_retention.run(cfg, args)
        return _check_config(cfg)
    except ConfigError as e:
        print(f"nvr: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyringError as e:
        print(f"nvr: key error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except (NvrError, StorageError, OSError) as e:
        print(f"nvr: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
