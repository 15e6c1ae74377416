"""The one command tree: every command is in ``--help``, has a handler of one signature, and parses."""

from __future__ import annotations

import argparse
import inspect
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from nvr.base.errors import ConfigError
from nvr.cli import exits
from nvr.cli.context import Context
from nvr.cli.main import execute, run
from nvr.cli.tree import COMMANDS, Command, build_parser
from storage.errors import IntegrityError

TOP = ["serve", "segments", "fetch", "keys", "user", "token", "verify", "verify-bundle", "reindex", "retention",
       "index", "cluster", "check-config"]
LEAVES = {"serve", "segments", "fetch", "keys", "user add", "user passwd", "user disable", "user enable", "user list",
          "token create", "token revoke", "token list", "verify",
          "verify-bundle", "reindex", "retention run", "retention preview", "index status", "index migrate", "cluster status",
          "check-config"}


def _leaves(commands: tuple[Command, ...], prefix: str = "") -> dict[str, Command]:
    out = {}
    for c in commands:
        name = f"{prefix}{c.name}"
        out.update(_leaves(c.sub, name + " ") if c.sub else {name: c})
    return out


def test_the_table_holds_every_command():
    assert [c.name for c in COMMANDS] == TOP
    assert set(_leaves(COMMANDS)) == LEAVES


def test_every_command_is_in_help(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    for c in COMMANDS:
        assert f"    {c.name} " in out and c.help in flat
    assert "exit status: 0 ok" in flat and "3 stored data does not match the ledger" in flat
    for group in ("token", "retention", "index", "cluster"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([group, "--help"])
        sub = next(c for c in COMMANDS if c.name == group).sub
        listed = capsys.readouterr().out
        assert all(f"    {s.name} " in listed for s in sub)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_every_leaf_has_a_handler_of_one_signature(leaf):
    handler = _leaves(COMMANDS)[leaf].run
    assert inspect.iscoroutinefunction(handler), leaf
    assert list(inspect.signature(handler).parameters) == ["args", "ctx"], leaf
    assert handler.__doc__, leaf


@pytest.mark.parametrize("argv", [["bogus"], [], ["token"], ["retention"], ["keys", "wipe"],
                                  ["fetch", "cam:1"], ["token", "create", "--name", "a", "--role", "root"]])
def test_bad_usage_exits_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as done:
        run(argv)
    assert done.value.code == exits.USAGE == 2
    assert "usage: nvr" in capsys.readouterr().err


def test_common_options_stand_on_every_command():
    p = build_parser()
    for leaf in LEAVES:
        required = {"fetch": ["x:1", "-o", "f"], "keys": ["list"], "token create": ["--name", "a", "--role", "admin"],
                    "token revoke": ["a"], "user add": ["a", "--role", "viewer"], "user passwd": ["a"],
                    "user disable": ["a"], "user enable": ["a"], "verify": ["--camera", "a", "--start", "s", "--end", "e"],
                    "verify-bundle": ["b.zip"], "index migrate": ["--to", "postgresql://nvr@db/nvr"]}.get(leaf, [])
        args = p.parse_args([*leaf.split(), *required, "--data-dir", "/d", "--log-level", "debug"])
        assert (args.data_dir, args.log_level, args.config) == (Path("/d"), "debug", None)
        assert args.run is _leaves(COMMANDS)[leaf].run
    assert p.parse_args(["token", "--data-dir", "/e", "list"]).data_dir == Path("/e")


def _namespace(tmp_path: Path, handler) -> argparse.Namespace:
    return argparse.Namespace(config=None, data_dir=tmp_path / "data", log_level="info", run=handler)


@pytest.mark.parametrize(("error", "code", "line"), [
    (ConfigError("--start", "not a time"), 2, "nvr: config error: --start: not a time"),
    (IntegrityError("cam:1 differs", check="sha256"), 3, "nvr: VERIFICATION FAILED (sha256): cam:1 differs"),
    (FileNotFoundError(2, "No such file or directory"), 1, "nvr: FileNotFoundError: [Errno 2] No such file or directory"),
])
def test_main_maps_what_a_command_raises(tmp_path, capsys, error, code, line):
    async def failing(args: argparse.Namespace, ctx: Context) -> int:
        raise error

    assert execute(_namespace(tmp_path, failing)) == code
    assert capsys.readouterr().err == line + "\n"


def test_main_gives_the_command_its_config_and_closes_what_it_opened(tmp_path):
    seen = {}

    async def probe(args: argparse.Namespace, ctx: Context) -> int:
        assert isinstance(ctx.stack, AsyncExitStack)
        seen["data_dir"] = ctx.config.data_dir
        seen["index"] = ctx.index()
        ctx.stack.callback(seen.setdefault, "closed", True)
        return 7

    assert execute(_namespace(tmp_path, probe)) == 7
    assert seen["data_dir"] == (tmp_path / "data").resolve() and seen["closed"]
    assert (tmp_path / "data" / "index.sqlite3").exists()


def test_interrupted_exits_130(tmp_path):
    async def interrupted(args: argparse.Namespace, ctx: Context) -> int:
        raise KeyboardInterrupt

    assert execute(_namespace(tmp_path, interrupted)) == exits.INTERRUPTED == 130
