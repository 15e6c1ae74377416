"""Opening the storage side (keyring, index, bucket) for the server and for CLI commands."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from nvr.base.errors import ConfigError
from nvr.config.settings import Config
from storage.embedded_s3 import EmbeddedS3, attach
from storage.errors import TransientStorageError
from storage.index import Index
from storage.keyring import Keyring
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.backend")


@dataclass(frozen=True)
class Backend:
    keyring: Keyring
    index: Index
    store: ObjectStore
    node_id: str
    embedded: EmbeddedS3 | None = None  # the SeaweedFS this process started (its watch is the server's)


async def open_store(cfg: Config, stack: AsyncExitStack, *,
                     may_attach: bool) -> tuple[ObjectStore, EmbeddedS3 | None]:
    """The configured S3 endpoint, or the embedded SeaweedFS (attached to a running server's, or started).

    Returns the store and the embedded S3 this call started, if any (stopped by ``stack``).
    """
    st = cfg.storage
    embedded: EmbeddedS3 | None = None
    if st.endpoint:
        access, secret = st.credentials()
        if not access or not secret:
            raise ConfigError(
                "storage.access_key",
                f"storage.endpoint is set but no credentials: set storage.access_key/secret_key "
                f"or the environment variables {st.access_key_env}/{st.secret_key_env}",
                source=cfg.source,
            )
        endpoint, secure = st.endpoint, st.secure
    else:
        ep = attach(cfg.data_dir) if may_attach else None
        if ep is None:
            embedded = EmbeddedS3(cfg.data_dir)
            ep = await embedded.start()
            stack.push_async_callback(embedded.stop)
        endpoint, access, secret, secure = ep.endpoint, ep.access_key, ep.secret_key, ep.secure
    store = ObjectStore(
        endpoint=endpoint, access_key=access, secret_key=secret, bucket=st.bucket, secure=secure,
        region=st.region, ca_file=st.ca_file, max_connections=st.max_connections, object_lock=st.object_lock,
    )
    stack.callback(store.close)
    return store, embedded


def private_paths(cfg: Config) -> list[Path]:
    """What must be the nvr user's alone: the data dir and spool (dirs) and the index files in them."""
    paths = [cfg.data_dir, cfg.spool_dir, cfg.keyring_dir]
    paths += [cfg.index_path.with_name(cfg.index_path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return paths


def make_private(cfg: Config) -> list[str]:
    """Create the data dir 0700 and narrow what others could read (a warning line each); returns the lines.

    The process umask (0077, set by the wiring and the CLI) keeps what nvr and its children create
    private from then on; this mends what an older release or an operator left open.
    """
    cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fixed = []
    for path in private_paths(cfg):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            os.chmod(path, mode & want)
            fixed.append(f"{path} was mode {mode:o}, readable by other local users; now {mode & want:o}")
    for line in fixed:
        log.warning("data dir: %s", line)
    return fixed


def open_index(cfg: Config) -> Index:
    """The index ``cfg`` names (``[index] url``, else the SQLite file), migrated to this release (blocking)."""
    return Index(cfg.index_target, password_file=cfg.index.password_file)


async def open_backend(cfg: Config, stack: AsyncExitStack, *, may_attach: bool, create_keys: bool,
                       check_bucket: bool = True) -> Backend:
    """Keyring, index and bucket, each closed by ``stack`` in reverse order of opening.

    ``check_bucket=False`` makes no S3 request: the server checks the bucket in the background, so
    recording and the API start whatever S3 does.
    """
    await asyncio.to_thread(make_private, cfg)
    keyring = Keyring.open(cfg.keyring_dir, create=create_keys)
    index = await asyncio.to_thread(open_index, cfg)
    stack.callback(index.close)
    store, embedded = await open_store(cfg, stack, may_attach=may_attach)
    if check_bucket:
        try:
            await store.run(store.ensure_bucket)
        except TransientStorageError as e:
            log.error("bucket %s can't be checked yet (%s)", store.bucket, e)
    return Backend(keyring=keyring, index=index, store=store, node_id=cfg.server.node_id or socket.gethostname(),
                   embedded=embedded)
