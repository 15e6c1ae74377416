"""What every command gets besides its arguments: the config, and the index or backend opened one way."""

from __future__ import annotations

import argparse
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from nvr.base.errors import NotFound
from nvr.config.settings import Config, load_config, parse_listen
from nvr.server.backend import Backend, open_backend, open_index
from storage.index import Index

NOTHING_RECORDED = "nothing recorded with this data dir yet"


def config_from(args: argparse.Namespace) -> Config:
    """The config file of ``--config`` (else ``$NVR_CONFIG``, else defaults) with the command-line overrides."""
    path = args.config or (Path(os.environ["NVR_CONFIG"]) if os.environ.get("NVR_CONFIG") else None)
    cfg = load_config(path)
    listen = parse_listen(args.listen, "--listen") if getattr(args, "listen", None) else None
    return cfg.with_overrides(data_dir=args.data_dir.resolve() if args.data_dir else None, listen=listen)


@dataclass(frozen=True)
class Context:
    """One command's config; whatever it opens through here is closed by ``stack`` when it returns."""

    config: Config
    stack: AsyncExitStack

    def require_index(self, hint: str = NOTHING_RECORDED) -> None:
        """Stop with NotFound unless this data dir has an index (commands that only read never create one)."""
        if self.config.index.url is None and not self.config.index_path.exists():
            raise NotFound(f"no index at {self.config.index_path} ({hint})")

    def index(self) -> Index:
        """The index alone (created if absent), for commands that need no keys or bucket."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        index = open_index(self.config)
        self.stack.callback(index.close)
        return index

    async def backend(self) -> Backend:
        """Keyring, index and bucket; attaches to a running server's embedded S3, never creates keys."""
        return await open_backend(self.config, self.stack, may_attach=True, create_keys=False)
