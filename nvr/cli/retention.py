"""``nvr retention run`` and ``nvr retention preview [--rules FILE.json]``.

``run`` sweeps once with the rules in force (the config file's, or the ones
changed over the API since: latest change wins) and exits 0 when everything
selected is deleted, 1 when some deletions stay pending (S3 refused them; the
next run retries). It refuses to run while a server runs on the same data dir
(that server sweeps; ``POST /api/v1/retention/run`` triggers it now).

``preview`` answers what a sweep would delete now, per camera, under the
rules in force or the proposed rule set of ``--rules`` (JSON, the form of
``GET /api/v1/retention``'s ``rules``); it deletes and changes nothing, so it
may run beside a server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from nvr.base.errors import ConfigError
from nvr.base.units import format_size
from nvr.config.retention import RetentionRuleError
from nvr.config.settings import Config
from nvr.server.backend import open_backend
from retention.service import RetentionBusy, RetentionService, RetentionSettings
from retention.sweep import preview_json
from storage.audit import AuditLog, cli_actor

EXIT_FAIL = 1


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("retention", parents=[common], help="run a retention sweep or preview one")
    rsub = s.add_subparsers(dest="retention_action", required=True)
    r = rsub.add_parser("run", parents=[common],
                        help="sweep once now with the rules in force (refused while a server runs on this data dir)")
    r.add_argument("--json", action="store_true", help="print the run report as JSON")
    p = rsub.add_parser("preview", parents=[common], help="what a sweep would delete now; deletes nothing")
    p.add_argument("--rules", type=Path, default=None,
                   help="JSON file with a proposed rule set (default: the rules in force)")
    p.add_argument("--json", action="store_true", help="print the preview as JSON")


def run(cfg: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_run(cfg, args))


def _load_rules(path: Path, svc: RetentionService):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--rules", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError("--rules", f"{path} is not a JSON rule set: {e}") from None
    try:
        return svc.parse_rules(data)
    except RetentionRuleError as e:
        raise ConfigError(f"--rules {e.field}", e.message) from None


async def _run(cfg: Config, args: argparse.Namespace) -> int:
    if not cfg.index_path.exists():
        print(f"nvr: no index at {cfg.index_path} (nothing recorded with this data dir yet)", file=sys.stderr)
        return EXIT_FAIL
    async with AsyncExitStack() as stack:
        backend = await open_backend(cfg, stack, may_attach=True, create_keys=False)
        audit = AuditLog(backend.index)
        svc = RetentionService(index=backend.index, store=backend.store, node_id=backend.node_id, audit=audit,
                               settings=RetentionSettings.from_config(cfg),
                               lock_file=cfg.data_dir / "retention.lock")
        stack.push_async_callback(svc.stop)
        if args.retention_action == "preview":
            await svc.open(exclusive=False, import_config=False)
            rules = _load_rules(args.rules, svc) if args.rules else None
            out = preview_json(await svc.preview(rules))
            if args.json:
                print(json.dumps(out, sort_keys=True, indent=2))
            else:
                _print_preview(out)
            return 0
        try:
            await svc.open()
        except RetentionBusy as e:
            print(f"nvr: {e}", file=sys.stderr)
            return EXIT_FAIL
        await audit.record("retention.run", "retention", {"trigger": "cli"}, actor=cli_actor())
        report = await svc.run_now("cli")
        if args.json:
            print(json.dumps(report.as_dict(), sort_keys=True, indent=2))
        else:
            for cam, c in sorted(report.deleted.items()):
                rules = ", ".join(f"{k} {v}" for k, v in sorted(c.rules.items()))
                print(f"{cam:<24} deleted {c.segments:>6} segment(s) {format_size(c.bytes):>10}  ({rules})")
            for sid, err in report.failed:
                print(f"{sid:<24} PENDING: {err}")
            print(f"sweep #{report.run_id}: deleted {report.deleted_segments} segment(s), "
                  f"{format_size(report.deleted_bytes)}; {len(report.failed)} failed, {report.pending_left} pending; "
                  f"usage {format_size(report.usage_before)} -> {format_size(report.usage_after)}", file=sys.stderr)
        if report.error:
            print(f"nvr: sweep stopped early: {report.error}", file=sys.stderr)
        return EXIT_FAIL if report.failed or report.error else 0


def _print_preview(out: dict) -> None:
    print(f"{'camera':<24} {'delete':>7} {'bytes':>10}  {'oldest':<24} {'newest':<24} {'held':>5} {'held bytes':>10}")
    for cam, c in out["cameras"].items():
        print(f"{cam:<24} {c['delete_count']:>7} {format_size(c['delete_bytes']):>10}  {c['oldest'] or '-':<24} "
              f"{c['newest'] or '-':<24} {c['held_count']:>5} {format_size(c['held_bytes']):>10}")
    print(f"would delete {out['delete_count']} segment(s), {format_size(out['delete_bytes'])} "
          f"(kept only by holds: {format_size(out['held_bytes'])}); usage {format_size(out['usage_before'])} -> "
          f"{format_size(out['usage_after'])}{'; quota NOT met' if out['quota_unmet'] else ''}", file=sys.stderr)
