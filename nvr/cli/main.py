"""The ``nvr`` process entry point: parse the command line, set up logging, run the command, map its errors."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from nvr.base.errors import NvrError
from nvr.cli import exits
from nvr.cli.context import Context, config_from
from nvr.cli.logs import setup_logging
from nvr.cli.tree import build_parser

log = logging.getLogger("nvr.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nvr`` command: its exit code (``nvr.cli.exits``)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    # Everything nvr and its children (ffmpeg, weed) create is the nvr user's alone: footage in the
    # spool, the index with camera passwords, exports (docs/security.md).
    os.umask(0o077)
    return execute(args)


def run(argv: Sequence[str]) -> int:
    """One command line run in this process, leaving logging as the caller set it up."""
    return execute(build_parser().parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    """Load the config, run the parsed command, and turn what stopped it into one line and an exit code."""
    try:
        return asyncio.run(_call(args))
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except (NvrError, OSError) as e:
        code, line = exits.for_error(e)
        log.debug("%s", line, exc_info=e)  # the traceback, for --log-level debug
        print(line, file=sys.stderr)
        return code


async def _call(args: argparse.Namespace) -> int:
    config = config_from(args)
    async with AsyncExitStack() as stack:
        return await args.run(args, Context(config, stack))


if __name__ == "__main__":
    sys.exit(main())
