"""``nvr cluster status``: the nodes of the cluster this config's index belongs to, their cameras and leases."""

from __future__ import annotations

import argparse
import asyncio
import json

from nvr.base.errors import NotFound
from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.cluster.view import cluster_view, describe


async def status(args: argparse.Namespace, ctx: Context) -> int:
    """Print every node, the cameras it holds with their lease epochs and ages, and the job leases."""
    if ctx.config.index.url is None:
        raise NotFound("this config has no shared index ([index] url): a single node is no cluster")
    index = await asyncio.to_thread(ctx.index)
    view = await asyncio.to_thread(cluster_view, index, ttl_ms=round(ctx.config.cluster.lease_ttl * 1000))
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        print("\n".join(describe(view)))
    return OK
