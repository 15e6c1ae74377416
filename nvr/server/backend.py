"""Opening the storage side (keyring, index, bucket) for the server and for CLI commands."""

from __future__ import annotations

import logging
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass

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


async def open_store(cfg: Config, stack: AsyncExitStack, *, may_attach: bool) -> ObjectStore:
    """The configured S3 endpoint, or the embedded SeaweedFS (attached to a running server's, or started).

    A server (``may_attach=False``) stops its embedded S3 gracefully, which takes weed ~16 s; a
    one-shot CLI command only read from it, so it stops it quickly (weed loses nothing acknowledged).
    """
    st = cfg.storage
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
            if may_attach:
                stack.push_async_callback(embedded.stop, 2.0)
            else:
                stack.push_async_callback(embedded.stop)
        endpoint, access, secret, secure = ep.endpoint, ep.access_key, ep.secret_key, ep.secure
    store = ObjectStore(
        endpoint=endpoint, access_key=access, secret_key=secret, bucket=st.bucket, secure=secure,
        region=st.region, ca_file=st.ca_file, max_connections=st.max_connections, object_lock=st.object_lock,
    )
    stack.callback(store.close)
    return store


async def open_backend(cfg: Config, stack: AsyncExitStack, *, may_attach: bool, create_keys: bool) -> Backend:
    """Keyring, index and bucket, each closed by ``stack`` in reverse order of opening."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.open(cfg.keyring_dir, create=create_keys)
    index = Index(cfg.index_path)
    stack.callback(index.close)
    store = await open_store(cfg, stack, may_attach=may_attach)
    try:
        await store.run(store.ensure_bucket)
    except TransientStorageError as e:
        # Recording must not wait for S3: segments queue in the spool and ingest retries.
        log.error("bucket %s can't be checked yet (%s); recording to the spool until S3 answers", store.bucket, e)
    return Backend(keyring=keyring, index=index, store=store, node_id=cfg.server.node_id or socket.gethostname())
