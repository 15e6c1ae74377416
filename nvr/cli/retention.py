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
import json
import sys
from pathlib import Path

from nvr.base.errors import ConfigError
from nvr.base.units import format_size
from nvr.cli.context import Context
from nvr.cli.exits import FAILURE, OK
from nvr.config.retention import RetentionRuleError, RuleSet
from retention.service import RetentionService, RetentionSettings
from retention.sweep import preview_json
from storage.audit import AuditLog, cli_actor


async def _service(ctx: Context) -> tuple[RetentionService, AuditLog]:
    """The data dir's retention service (not yet opened), stopped when the command returns."""
    ctx.require_index()
    backend = await ctx.backend()
    audit = AuditLog(backend.index)
    svc = RetentionService(index=backend.index, store=backend.store, node_id=backend.node_id, audit=audit,
                           settings=RetentionSettings.from_config(ctx.config),
                           lock_file=ctx.config.data_dir / "retention.lock")
    ctx.stack.push_async_callback(svc.stop)
    return svc, audit


def _load_rules(path: Path, svc: RetentionService) -> RuleSet:
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


async def run(args: argparse.Namespace, ctx: Context) -> int:
    """Sweep once now; refused (RetentionBusy) while another process owns this data dir's sweep."""
    svc, audit = await _service(ctx)
    await svc.open()
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
    return FAILURE if report.failed or report.error else OK


async def preview(args: argparse.Namespace, ctx: Context) -> int:
    """What a sweep would delete now under the rules in force or ``--rules``; changes nothing."""
    svc, _ = await _service(ctx)
    await svc.open(exclusive=False, import_config=False)
    rules = _load_rules(args.rules, svc) if args.rules else None
    out = preview_json(await svc.preview(rules))
    if args.json:
        print(json.dumps(out, sort_keys=True, indent=2))
    else:
        _print_preview(out)
    return OK


def _print_preview(out: dict) -> None:
    print(f"{'camera':<24} {'delete':>7} {'bytes':>10}  {'oldest':<24} {'newest':<24} {'held':>5} {'held bytes':>10}")
    for cam, c in out["cameras"].items():
        print(f"{cam:<24} {c['delete_count']:>7} {format_size(c['delete_bytes']):>10}  {c['oldest'] or '-':<24} "
              f"{c['newest'] or '-':<24} {c['held_count']:>5} {format_size(c['held_bytes']):>10}")
    print(f"would delete {out['delete_count']} segment(s), {format_size(out['delete_bytes'])} "
          f"(kept only by holds: {format_size(out['held_bytes'])}); usage {format_size(out['usage_before'])} -> "
          f"{format_size(out['usage_after'])}{'; quota NOT met' if out['quota_unmet'] else ''}", file=sys.stderr)
