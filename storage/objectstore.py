"""The bucket, through the minio SDK: PUT/GET/HEAD of segment objects and bucket set-up.

The SDK is blocking; every call runs on a bounded thread pool whose size equals
the HTTP connection pool, so no call ever waits on a connection while holding
a thread. Network failures and 5xx answers become :class:`TransientStorageError`
(retry later, keep the spool file); other S3 errors are permanent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import genheaders
from minio.retention import Retention
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from storage.errors import FULL_CODES, Cause, StorageError, TransientStorageError

log = logging.getLogger("nvr.s3")

RECORD_META = "nvr-record"
T = TypeVar("T")
# S3 error codes meaning "no such object (version)": an answer, not a failure, for a HEAD or a delete.
GONE_CODES = ("NoSuchKey", "NoSuchVersion", "NoSuchObject", "ResourceNotFound")
MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PutObject
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# Carries a body's known SHA-256 from ObjectStore.put to the signer; removed before the request is sent.
_KNOWN_SHA256 = "x-nvr-known-sha256"


class _Client(Minio):
    """The minio client, signing a PUT with the payload SHA-256 the caller already computed.

    The SDK hashes every body again for SigV4 on plain http (and MD5s it on
    https); ingest has just computed the object's SHA-256 for the ledger, so it
    is handed to the signer instead. Over https too the payload is then signed
    rather than ``UNSIGNED-PAYLOAD``. Overrides one method of the pinned SDK
    (minio 7.2.x); tests/storage/test_objectstore.py fails if the SDK stops calling it.
    """

    def _build_headers(self, host, headers=None, body=None, creds=None):
        known = headers.pop(_KNOWN_SHA256, None) if headers else None
        if known is None or creds is None:
            return super()._build_headers(host, headers, body, creds)
        headers, date = super()._build_headers(host, headers, None, creds)  # no body: nothing hashed
        headers["Content-Length"] = str(memoryview(body).nbytes if body is not None else 0)
        headers["x-amz-content-sha256"] = known
        return headers, date


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    version_id: str | None
    record: dict[str, Any] | None
    legal_hold: bool


def _header(headers: Any, name: str) -> str | None:
    wanted = name.lower()
    for k, v in headers.items():
        if k.lower() == wanted:
            return v
    return None


class ObjectStore:
    """One bucket on one S3 endpoint."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "",
        ca_file: str = "",
        max_connections: int = 8,
        object_lock: bool = False,
    ):
        self.bucket = bucket
        self.endpoint = endpoint
        self.object_lock = object_lock
        # Bounded waits: a hung S3 (accepts, never answers) costs at most READ_TIMEOUT per call, which
        # bounds shutdown and start; a healthy S3 answers a segment PUT in well under a second.
        timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        # One SDK-level retry of a failed connection; 5xx answers come back as they are, so an alarm can
        # say "answered 500" rather than "unreachable". The ingest loop owns retrying with back-off.
        retries = urllib3.Retry(total=1, read=0, backoff_factor=0.2)  # a read timeout is not retried here
        kwargs: dict[str, Any] = {"timeout": timeout, "maxsize": max_connections, "retries": retries, "block": True}
        if secure:
            ctx = ssl.create_default_context(cafile=ca_file or None)
            kwargs["ssl_context"] = ctx
        self._http = urllib3.PoolManager(**kwargs)
        self.client = _Client(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
            region=region or None, http_client=self._http,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="s3")
        self.max_connections = max_connections

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on the S3 thread pool, mapping S3 failures to our errors."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.guarded, fn, *args)

    async def run_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking job on the S3 thread pool as is; the job wraps its S3 calls in :meth:`guarded`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def guarded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``, mapping network failures and 5xx to TransientStorageError, other S3 errors to StorageError."""
        try:
            return fn(*args, **kwargs)
        except ServerError as e:
            raise TransientStorageError(f"S3 {self.endpoint} answered {e.status_code}: {e}",
                                        cause=Cause.FAILING) from e
        except S3Error as e:
            if e.code in FULL_CODES:
                raise StorageError(f"S3 {self.endpoint} is full: {e.code}: {e.message}", code=e.code) from e
            if e.code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise TransientStorageError(f"S3 {self.endpoint}: {e.code}: {e.message}", code=e.code,
                                            cause=Cause.FAILING) from e
            raise StorageError(f"S3 {self.endpoint}: {e.code}: {e.message} ({e.resource})", code=e.code) from e
        except InvalidResponseError as e:  # a proxy or load balancer answered instead of S3
            status = getattr(e, "_code", 0) or 0
            if status >= 500:
                raise TransientStorageError(f"S3 {self.endpoint} answered {status} (not S3's answer)",
                                            cause=Cause.FAILING) from e
            raise StorageError(f"S3 {self.endpoint} answered {status} (not S3's answer): {e}",
                               cause=Cause.DENIED if status in (401, 403) else Cause.REFUSED) from e
        except (Urllib3HTTPError, OSError) as e:
            raise TransientStorageError(f"S3 {self.endpoint} unreachable: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.clear()

    # ------------------------------------------------------------------ bucket

    def ensure_bucket(self) -> None:
        """Create the bucket (with object lock when configured) if it is missing; check lock otherwise."""
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket, object_lock=self.object_lock)
            except S3Error as e:
                if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                # Another node of the cluster created it a moment ago; its settings are checked below.
            else:
                log.info("created bucket %s%s", self.bucket, " with object lock" if self.object_lock else "")
                return
        if self.object_lock:
            try:
                self.client.get_object_lock_config(self.bucket)
            except S3Error as e:
                raise StorageError(
                    f"storage.object_lock is on but bucket {self.bucket} has no object lock ({e.code}); "
                    "object lock can only be enabled when a bucket is created"
                ) from e

    # ------------------------------------------------------------------ objects

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        record: dict[str, Any],
        sha256: str | None = None,
        retain_until: datetime | None = None,
    ) -> str | None:
        """PUT one object, in one request, with its ledger record in the metadata; returns the version id.

        ``sha256`` (hex, of ``data``) signs the payload without hashing it again
        and goes along as ``x-amz-checksum-sha256``: S3 (MinIO, AWS, SeaweedFS)
        refuses a body that does not match it (``BadDigest``) and stores the
        checksum with the object. AWS also requires that header (or an MD5) on a
        PUT with object-lock retention.
        """
        size = memoryview(data).nbytes
        if size > MAX_SINGLE_PUT:
            raise StorageError(f"{key}: {size} bytes is more than one S3 PUT takes ({MAX_SINGLE_PUT})")
        retention = Retention(GOVERNANCE, retain_until) if (retain_until and self.object_lock) else None
        headers = genheaders(
            {RECORD_META: json.dumps(record, sort_keys=True, separators=(",", ":"))}, None, None, retention, False
        )
        headers["Content-Type"] = "application/octet-stream"
        if sha256 is not None:
            headers[_KNOWN_SHA256] = sha256
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        # _put_object, not put_object: one request whatever the size (put_object goes multipart above
        # 5 MiB), and the body is sent from the caller's buffer without the SDK's copy.
        return self.client._put_object(self.bucket, key, data, headers).version_id

    def stat(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """HEAD an object; None when it does not exist."""
        try:
            st = self.client.stat_object(self.bucket, key, version_id=version_id)
        except S3Error as e:
            if e.code in GONE_CODES:
                return None
            raise
        raw = _header(st.metadata, f"x-amz-meta-{RECORD_META}")
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None
        hold = (_header(st.metadata, "x-amz-object-lock-legal-hold") or "").upper() == "ON"
        return StoredObject(key=key, size=st.size or 0, version_id=st.version_id, record=record, legal_hold=hold)

    def list_keys(self, prefix: str, *, recursive: bool = False, start_after: str | None = None,
                  limit: int | None = None) -> list[str]:
        """Keys under ``prefix``, ascending, after ``start_after``, at most ``limit``; without ``recursive``
        one level only (deeper keys show as ``<prefix><name>/``)."""
        out: list[str] = []
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive, start_after=start_after):
            out.append(obj.object_name or "")
            if limit is not None and len(out) >= limit:
                break
        return out

    def get_chunks(self, key: str, version_id: str | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object in pieces of about ``chunk`` bytes as they arrive (the connection is held until the end)."""
        resp = self.client.get_object(self.bucket, key, version_id=version_id)
        try:
            yield from resp.stream(chunk, decode_content=False)
        finally:
            resp.close()
            resp.release_conn()

    def get(self, key: str, version_id: str | None = None) -> bytes:
        """The whole object."""
        resp = self.client.get_object(self.bucket, key, version_id=version_id)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()
