"""``nvr serve`` and ``nvr check-config``: run the server, or only say what it would run with."""

from __future__ import annotations

import argparse

from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.server.app import serve as run_server


async def serve(args: argparse.Namespace, ctx: Context) -> int:
    """Record every enabled camera and serve the API until SIGINT or SIGTERM (a clean stop exits 0)."""
    await run_server(ctx.config, demo=args.demo)
    return OK


async def check_config(args: argparse.Namespace, ctx: Context) -> int:
    """Print a summary of the validated config (loading it is the check)."""
    cfg = ctx.config
    print(f"config ok: data dir {cfg.data_dir}, listen {cfg.server.listen_host}:{cfg.server.listen_port}, "
          f"storage {cfg.storage.endpoint or 'embedded SeaweedFS'} bucket {cfg.storage.bucket}")
    for cam in cfg.cameras:
        print(f"  camera {cam.id}: {cam.display_url}{'' if cam.enabled else ' (disabled)'}")
    return OK
