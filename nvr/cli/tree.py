"""The one command tree: every ``nvr`` command with its arguments and its handler, built into argparse.

A handler is ``async def name(args, ctx) -> int`` (``ctx`` is a ``Context``);
a group (``token``, ``retention``) has subcommands instead. Every command
and group takes the common options (``--config``, ``--data-dir``,
``--log-level``), so they may stand before or after a group's subcommand.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nvr import __version__
from nvr.cli import (
    cluster,
    custody,
    exits,
    footage,
    indexcmd,
    keys,
    retention,
    serve,
    tokens,
    users,
)
from nvr.cli.context import Context

Handler = Callable[[argparse.Namespace, Context], Awaitable[int]]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its flags (or positional name) and keywords."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    """An argument, written as it would be passed to ``add_argument``."""
    return Arg(flags, MappingProxyType(options))


@dataclass(frozen=True)
class Command:
    """A command with its handler, or a group of subcommands (then ``run`` is None)."""

    name: str
    help: str
    run: Handler | None = None
    args: tuple[Arg, ...] = ()
    sub: tuple[Command, ...] = ()


TIME_HELP = "RFC 3339 time, e.g. 2026-11-29T13:00:00Z"

COMMON = (
    arg("--config", type=Path, default=None, help="TOML config file (default: $NVR_CONFIG, else built-in defaults)"),
    arg("--data-dir", type=Path, default=None,
        help="directory of the index, keyring, spool and embedded S3 (overrides server.data_dir)"),
    arg("--log-level", default="info", choices=["debug", "info", "warning", "error"]),
)

COMMANDS: tuple[Command, ...] = (
    Command("serve", "record every enabled camera and serve the API", serve.serve, (
        arg("--listen", default=None, help="HOST:PORT for the HTTP API (overrides server.listen)"),
        arg("--demo", action="store_true", help="add two synthetic cameras when none are configured"),
    )),
    Command("segments", "list recorded segments from the index", footage.segments, (
        arg("--camera", default=None),
        arg("--start", default=None, help=TIME_HELP),
        arg("--end", default=None, help="RFC 3339 time"),
        arg("--json", action="store_true", help="one JSON object per line"),
    )),
    Command("fetch", "download, decrypt and verify one segment", footage.fetch, (
        arg("segment", help="segment id, as `nvr segments` lists it (camera:seq)"),
        arg("-o", "--output", type=Path, required=True, help="file to write the original MP4 to"),
    )),
    Command("keys", "list or rotate keys", keys.keys, (arg("action", choices=list(keys.ACTIONS)),)),
    Command("user", "add, change or list the console's users (people; tokens are for machines)", sub=(
        Command("add", "add a user; the password is read from the terminal or stdin", users.add, (
            arg("name"), arg("--role", required=True, choices=users.ROLE_CHOICES),
            arg("--cameras", help="comma-separated camera ids (default: every camera)"))),
        Command("passwd", "set a user's password (ends its sessions)", users.passwd, (arg("name"),)),
        Command("disable", "disable a user (ends its sessions)", users.disable, (arg("name"),)),
        Command("enable", "enable a disabled user", users.enable, (arg("name"),)),
        Command("list", "list users (never passwords)", users.list_users),
    )),
    Command("token", "create, revoke or list API tokens", sub=(
        Command("create", "create a token; prints it once on stdout", tokens.create, (
            arg("--name", required=True),
            arg("--role", required=True, choices=list(tokens.ROLES)),
            arg("--cameras", default=None, help="comma-separated camera ids the token is limited to"),
        )),
        Command("revoke", "revoke a token by name", tokens.revoke, (arg("name"),)),
        Command("list", "list tokens (never the tokens themselves)", tokens.list_tokens),
    )),
    Command("verify", "verify a camera's footage in a time range against the ledger and signed checkpoints",
            custody.verify, (
                arg("--camera", required=True, help="camera id"),
                arg("--start", required=True, help=TIME_HELP),
                arg("--end", required=True, help="RFC 3339 time, after --start"),
                arg("--json", action="store_true", help="print the full report as JSON"),
            )),
    Command("verify-bundle", "check an evidence export bundle offline", custody.verify_bundle_file, (
        arg("bundle", type=Path, help="the bundle's .zip (or its unpacked directory)"),
        arg("--key", type=Path, action="append", default=None,
            help="PEM public key the bundle may be signed with (repeatable); default: the data dir's keyring"),
        arg("--fingerprint", action="append", default=None,
            help="SHA-256 fingerprint of a key the bundle may be signed with, as `nvr keys list` prints it "
                 "(repeatable)"),
        arg("--json", action="store_true", help="print the checks as JSON"),
    )),
    Command("reindex", "rebuild the segment index and ledger from the bucket (server stopped)", custody.reindex, (
        arg("--force", action="store_true", help="replace a non-empty index (a copy is kept)"),
        arg("--json", action="store_true", help="print the report as JSON"),
    )),
    Command("retention", "run a retention sweep or preview one", sub=(
        Command("run", "sweep once now with the rules in force (refused while a server runs on this data dir)",
                retention.run, (arg("--json", action="store_true", help="print the run report as JSON"),)),
        Command("preview", "what a sweep would delete now; deletes nothing", retention.preview, (
            arg("--rules", type=Path, default=None,
                help="JSON file with a proposed rule set (default: the rules in force)"),
            arg("--json", action="store_true", help="print the preview as JSON"),
        )),
    )),
    Command("index", "show the index or copy it into PostgreSQL", sub=(
        Command("status", "backend, location, schema version and rows per table", indexcmd.status,
                (arg("--json", action="store_true", help="print the status as JSON"),)),
        Command("migrate", "copy an index into a new, empty PostgreSQL database (stop the server first)",
                indexcmd.migrate, (
                    arg("--from", dest="from_", default="sqlite",
                        help="'sqlite' (this data dir's index, the default), an index file, or a postgresql:// URL"),
                    arg("--to", required=True, help="postgresql://user@host:port/database (no password in it)"),
                    arg("--password-file", type=Path, default=None,
                        help="file holding the target's password (default: index.password_file, "
                             "else $NVR_INDEX_PASSWORD)"),
                    arg("--json", action="store_true", help="print the rows copied as JSON"),
                )),
    )),
    Command("cluster", "the recording cluster's nodes, cameras and leases", sub=(
        Command("status", "every node, its cameras with lease epochs and ages, the job leases, signing keys",
                cluster.status, (arg("--json", action="store_true", help="print the status as JSON"),)),
    )),
    Command("check-config", "validate the config and print a summary", serve.check_config),
)


def _add(sub: argparse._SubParsersAction, command: Command, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(command.name, parents=[common], help=command.help)
    for a in command.args:
        p.add_argument(*a.flags, **a.options)
    if command.sub:
        # The dest names the missing subcommand in argparse's error ("required: token_action").
        inner = p.add_subparsers(dest=f"{command.name}_action", required=True)
        for child in command.sub:
            _add(inner, child, common)
    else:
        p.set_defaults(run=command.run)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The argparse tree of ``commands``; a parsed line's ``run`` is its handler."""
    # The common options' defaults live on the top parser only: a subcommand's parser copies every
    # default it has over what its group parsed, so `nvr token --data-dir D list` would lose D.
    common = argparse.ArgumentParser(add_help=False)
    defaults = {}
    for a in COMMON:
        action = common.add_argument(*a.flags, **{**a.options, "default": argparse.SUPPRESS})
        defaults[action.dest] = a.options.get("default")
    p = argparse.ArgumentParser(prog="nvr", description="Evidence-grade network video recorder.",
                                epilog=exits.epilog())
    p.set_defaults(**defaults)
    p.add_argument("--version", action="version", version=f"nvr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in commands:
        _add(sub, command, common)
    return p
