"""``nvr serve`` and ``nvr check-config``: run the server, or only say what it would run with."""

from __future__ import annotations

import argparse
import sys

from nvr.base.redact import has_credentials
from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.recording.command import hidden_input
from nvr.server.run import serve as run_server


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
        if has_credentials(cam.url) and hidden_input(cam, cfg.recording.connect_timeout) is None:
            # ffmpeg has no way to take these credentials but its argv, which every local user can read.
            print(f"warning: camera {cam.id}: the URL's credentials will be in ffmpeg's command line; hide "
                  "other users' processes (mount /proc with hidepid=2, or systemd ProtectProc=invisible): "
                  "see docs/security.md", file=sys.stderr)
    return OK
