"""``nvr token create|revoke|list``: the API's bearer tokens, kept in the index."""

from __future__ import annotations

import argparse
import sys

from nvr.api.auth import create_token
from nvr.base.errors import ConfigError, NotFound
from nvr.base.ids import is_camera_id
from nvr.base.times import ms_to_rfc3339
from nvr.cli.context import Context
from nvr.cli.exits import OK
from storage.audit import AuditLog, cli_actor
from storage.errors import StorageError

ROLES = ("viewer", "evidence", "admin")


def _cameras(value: str | None) -> list[str] | None:
    """``--cameras a,b`` as a sorted list of camera ids; None means every camera."""
    if value is None:
        return None
    cameras = sorted({c.strip() for c in value.split(",") if c.strip()})
    bad = [c for c in cameras if not is_camera_id(c)]
    if not cameras or bad:
        raise ConfigError("--cameras", f"{', '.join(bad) or '(empty)'}: not camera ids")
    return cameras


async def create(args: argparse.Namespace, ctx: Context) -> int:
    """Create a token and print it once on stdout."""
    index = ctx.index()
    cameras = _cameras(args.cameras)
    try:
        token = create_token(index, name=args.name, role=args.role, cameras=cameras)
    except (ValueError, StorageError) as e:  # a bad or taken name
        raise ConfigError("--name", str(e)) from None
    await AuditLog(index).record("token.create", args.name, {"role": args.role, "cameras": cameras},
                                 actor=cli_actor())
    print(token)
    print(f"token {args.name!r} ({args.role}) created; it is shown only this once", file=sys.stderr)
    return OK


async def revoke(args: argparse.Namespace, ctx: Context) -> int:
    """Revoke the live token of that name."""
    index = ctx.index()
    if not index.revoke_token(args.name):
        raise NotFound(f"no live token named {args.name!r}")
    await AuditLog(index).record("token.revoke", args.name, {}, actor=cli_actor())
    print(f"token {args.name!r} revoked", file=sys.stderr)
    return OK


async def list_tokens(args: argparse.Namespace, ctx: Context) -> int:
    """One line per token, live or revoked; never the token itself."""
    for name, role, cams, created, revoked in ctx.index().tokens():
        state = f"revoked {ms_to_rfc3339(revoked)}" if revoked else "live"
        scope = ",".join(cams) if cams is not None else "all cameras"
        print(f"{name:<24} {role:<9} {scope:<30} created {ms_to_rfc3339(created)}  {state}")
    return OK
