"""PUTs against real S3: signed with the hash ingest already has, and refused when the body does not match it."""

from __future__ import annotations

import hashlib
import os

import pytest

from storage.errors import StorageError

pytestmark = pytest.mark.integration


async def test_put_is_signed_with_the_known_sha256_without_hashing_again(storage_parts, monkeypatch):
    """One PUT request of the caller's buffer; the SDK's own payload hashing is never called."""
    import minio.api

    store = storage_parts.store

    def no_hashing(data=None):
        if data:  # the empty-body hash of the headers-only call is free
            raise AssertionError("the SDK hashed a body whose SHA-256 was given")
        return hashlib.sha256(b"").hexdigest()

    monkeypatch.setattr(minio.api, "sha256_hash", no_hashing)
    monkeypatch.setattr(minio.api, "md5sum_hash", no_hashing)
    body = bytearray(os.urandom(6 * 1024 * 1024))  # above the SDK's 5 MiB multipart threshold
    requests = []
    real_urlopen = store._http.urlopen
    monkeypatch.setattr(store._http, "urlopen", lambda method, url, **kw: requests.append(method) or
                        real_urlopen(method, url, **kw))
    store.guarded(store.put, "k", memoryview(body), record={"seq": 0}, sha256=hashlib.sha256(body).hexdigest())
    assert requests == ["PUT"]  # the server accepted the signature over our hash, in one request
    monkeypatch.undo()
    assert store.get("k") == bytes(body)


async def test_s3_refuses_a_body_that_does_not_match_its_sha256(storage_parts):
    """The hash goes along as x-amz-checksum-sha256, so S3 checks the bytes it received against the ledger's."""
    store = storage_parts.store
    body = os.urandom(100_000)
    damaged = bytearray(body)
    damaged[500] ^= 0x01
    with pytest.raises(StorageError, match="BadDigest"):
        store.guarded(store.put, "k", damaged, record={"seq": 0}, sha256=hashlib.sha256(body).hexdigest())
    assert store.stat("k") is None  # nothing was stored
