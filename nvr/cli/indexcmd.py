"""``nvr index status|migrate``: which index this node uses, and copying an index into a new PostgreSQL database.

``migrate`` copies every table (ledger, segments, audit, tokens, cameras,
checkpoints, exports, retention) in one transaction on the target, from one
snapshot of the source, then says which ``[index]`` lines to put in the
config. The source is left as it was. Stop the server first: what it writes
after the snapshot would not be in the copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from nvr.base.errors import ConfigError
from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.config.settings import index_url_problem
from storage.audit import AuditLog, cli_actor
from storage.index import Index, is_url


async def status(args: argparse.Namespace, ctx: Context) -> int:
    """Print the backend, where the index is, its schema version and its rows per table."""
    ctx.require_index()
    index = await asyncio.to_thread(ctx.index)
    counts = await asyncio.to_thread(index.maintenance.table_counts)
    report = {"backend": index.dialect, "index": index.describe(), "schema_version": index.schema_version(),
              "rows": counts}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"{report['backend']} index {report['index']}, schema version {report['schema_version']}")
        for table, n in counts.items():
            print(f"  {table:24} {n:>12,}")
    return OK


def _open_source(ctx: Context, source: str) -> Index:
    if source == "sqlite":
        ctx.require_index()
        return Index(ctx.config.index_path)
    if is_url(source):
        if problem := index_url_problem(source):
            raise ConfigError("--from", problem)
        return Index(source, password_file=ctx.config.index.password_file)
    path = Path(source)
    if not path.is_file():
        raise ConfigError("--from", f"{source}: not an index file (nor 'sqlite', nor a postgresql:// URL)")
    return Index(path)


async def migrate(args: argparse.Namespace, ctx: Context) -> int:
    """Copy the index named by ``--from`` into the empty PostgreSQL database of ``--to``."""
    if problem := index_url_problem(args.to):
        raise ConfigError("--to", problem)
    password_file = args.password_file or ctx.config.index.password_file
    source = await asyncio.to_thread(_open_source, ctx, args.from_)
    ctx.stack.callback(source.close)
    target = await asyncio.to_thread(lambda: Index(args.to, password_file=password_file))
    ctx.stack.callback(target.close)

    def progress(table: str, n: int) -> None:
        if n % 100_000 == 0:
            print(f"  {table}: {n:,} rows", file=sys.stderr)

    copied = await asyncio.to_thread(source.maintenance.copy_into, target.maintenance, progress=progress)
    await AuditLog(target).record("index.migrated", "index", {
        "from": source.describe(), "to": target.describe(), "rows": copied}, actor=cli_actor())
    if args.json:
        print(json.dumps({"from": source.describe(), "to": target.describe(), "rows": copied}, indent=2,
                         sort_keys=True))
    else:
        print(f"copied {sum(copied.values()):,} rows from {source.describe()} to {target.describe()}")
        print("to use it, set in the config (and give the password by index.password_file or $NVR_INDEX_PASSWORD):")
        print(f'  [index]\n  url = "{target.describe()}"')
    return OK
