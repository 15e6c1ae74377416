"""``nvr user add|passwd|disable|enable|list``: the console's people, kept in the index.

A password is read from the terminal (asked twice) or, when stdin is not a
terminal, from its first line, so it never appears in argv or the shell's history.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from nvr.api.people import check_password, hash_password
from nvr.base.errors import ConfigError, InvalidInput, NotFound
from nvr.base.times import ms_to_rfc3339
from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.cli.tokens import ROLES, _cameras
from storage.audit import AuditLog, cli_actor
from storage.errors import StorageError


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("password", "the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    try:
        return check_password(first)
    except InvalidInput as e:
        raise ConfigError("password", str(e)) from None


async def add(args: argparse.Namespace, ctx: Context) -> int:
    """Add a user with a role (and cameras); its password from the terminal or stdin."""
    index, cameras = ctx.index(), _cameras(args.cameras)
    digest = hash_password(_password())
    try:
        index.people.add_user(name=args.name, role=args.role, cameras=cameras, password_hash=digest)
    except StorageError as e:
        raise ConfigError("name", str(e)) from None
    await AuditLog(index).record("user.create", args.name, {"role": args.role, "cameras": cameras}, actor=cli_actor())
    print(f"user {args.name!r} ({args.role}) added", file=sys.stderr)
    return OK


async def _change(ctx: Context, name: str, what: str, **changes) -> int:
    index = ctx.index()
    if index.people.update_user(name, **changes) is None:
        raise NotFound(f"no user named {name!r}")
    await AuditLog(index).record("user.update", name, {"changed": what}, actor=cli_actor())
    print(f"user {name!r}: {what} (its sessions ended)", file=sys.stderr)
    return OK


async def passwd(args: argparse.Namespace, ctx: Context) -> int:
    """Set a user's password (ends its sessions)."""
    return await _change(ctx, args.name, "password changed", password_hash=hash_password(_password()))


async def disable(args: argparse.Namespace, ctx: Context) -> int:
    """Disable a user: it can't log in, its sessions end."""
    return await _change(ctx, args.name, "disabled", disabled=True)


async def enable(args: argparse.Namespace, ctx: Context) -> int:
    """Enable a disabled user."""
    return await _change(ctx, args.name, "enabled", disabled=False)


async def list_users(args: argparse.Namespace, ctx: Context) -> int:
    """One line per user; never a password or its hash."""
    for u in ctx.index().people.users():
        scope = ",".join(u.cameras) if u.cameras is not None else "all cameras"
        state = f"disabled {ms_to_rfc3339(u.disabled_ms)}" if u.disabled_ms else "active"
        print(f"{u.name:<24} {u.role:<9} {scope:<30} created {ms_to_rfc3339(u.created_ms)}  {state}")
    return OK


ROLE_CHOICES = list(ROLES)
