"""``python -m bench.whatif_server serve …``: ``nvr`` with three ingest changes patched in, to measure them.

A bench prototype, not product code: it runs the real ``nvr.cli.main`` after
monkeypatching a few calls of the ingest path, so measurement 1 can run it
beside the shipped server (same run, same cameras) and show what the changes
recommended in docs/benchmarks.md would save:

1. **PUT signed with the known SHA-256.** On plain http the minio SDK hashes
   every PUT body again for SigV4 (``x-amz-content-sha256``); ingest has just
   computed that very hash (the record's ``object_sha256``). The patched
   ``ObjectStore.put`` hands it to the signer (one-method SDK subclass).
2. **No HEAD before a segment's first PUT.** Step 6 of the lifecycle HEADs
   every object key before writing, which only matters when an earlier
   attempt (this process's, or a crashed one's) may have written it. The
   patched ``ObjectStore.stat`` answers "absent" for keys this process never
   wrote, which is exact only because the bench starts on an empty bucket; the
   product would HEAD only for tickets older than the process or already tried.
3. **One streaming pass instead of read + hash + encrypt + hash** over whole
   5 MB buffers (``StreamingSealer``: 1 MiB chunks through SHA-256, an
   AES-GCM encryptor writing into a reused per-camera buffer, SHA-256 of the
   output; the same envelope bytes). ``Ingestor._read_and_hash`` does the
   whole pass and ``Ingestor._seal`` hands over its result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STREAM_CHUNK = 1 << 20


class StreamingSealer:
    """What-if of steps 5 + 7 in one pass: read 1 MiB chunks, SHA-256 them, AES-GCM them into one reused
    buffer, SHA-256 the output. Same envelope bytes as ``storage.envelope.encrypt`` (header || ciphertext
    || tag), no 5 MB allocation or copy per segment. Bench prototype, checked against ``decrypt``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.chunk = bytearray(STREAM_CHUNK)

    def seal(self, path: Path, ctx, key_id: str, kek: bytes) -> tuple[memoryview, int, str, str]:
        """(object bytes, plaintext size, SHA-256 of plaintext, SHA-256 of object)."""
        import hashlib
        import secrets

        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap

        from storage.envelope import NONCE_LEN, _build_header

        data_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_LEN)
        header = _build_header(key_id, aes_key_wrap(kek, data_key), nonce)
        enc = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(ctx.aad(header))
        size = path.stat().st_size
        need = len(header) + size + 16 + STREAM_CHUNK
        if len(self.buf) < need:
            self.buf = bytearray(need)  # a new one: the last segment's view may still be alive
        out, cv = memoryview(self.buf), memoryview(self.chunk)
        out[:len(header)] = header
        hp, ho = hashlib.sha256(), hashlib.sha256(header)
        pos = len(header)
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(self.chunk):
                hp.update(cv[:n])
                w = enc.update_into(cv[:n], out[pos:pos + n + 15])
                ho.update(out[pos:pos + w])
                pos += w
        w = len(enc.finalize())
        assert w == 0
        out[pos:pos + 16] = enc.tag
        ho.update(enc.tag)
        pos += 16
        return out[:pos], size, hp.hexdigest(), ho.hexdigest()


def presigned_client_class():
    from minio import Minio

    class PresignedMinio(Minio):
        """Signs a PUT with a SHA-256 given in the private header ``x-bench-content-sha256``."""

        def _build_headers(self, host, headers=None, body=None, creds=None):
            pre = (headers or {}).pop("x-bench-content-sha256", None)
            if pre is None or self._base_url.is_https:
                return super()._build_headers(host, headers, body, creds)
            headers, date = super()._build_headers(host, headers, None, creds)
            if body:
                headers["Content-Length"] = str(len(body))
            headers["x-amz-content-sha256"] = pre
            return headers, date

    return PresignedMinio


def put_with_known_sha256(store, key: str, data: bytes, record: dict[str, Any], sha256_hex: str) -> str | None:
    """PUT ``data`` as ``ObjectStore.put`` does (same metadata), signing with ``sha256_hex``."""
    from minio.helpers import genheaders

    from storage.objectstore import RECORD_META

    cls = presigned_client_class()
    if not isinstance(store.client, cls):
        store.client.__class__ = cls  # same connection pool and credentials
    headers = genheaders({RECORD_META: json.dumps(record, sort_keys=True, separators=(",", ":"))},
                         None, None, None, False)
    headers["Content-Type"] = "application/octet-stream"
    headers["x-bench-content-sha256"] = sha256_hex
    return store.client._put_object(store.bucket, key, data, headers).version_id


class _Size:
    """Stands for the plaintext bytes where ingest only takes their length."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def apply() -> None:
    from storage.envelope import SegmentContext
    from storage.ingest import Ingestor, object_key
    from storage.objectstore import ObjectStore
    from storage.times import ms_to_rfc3339

    shipped_put, shipped_stat = ObjectStore.put, ObjectStore.stat
    written: set[str] = set()
    sealers: dict[str, StreamingSealer] = {}  # one buffer per camera: a lane ingests one segment at a time
    sealed: dict[str, tuple] = {}

    def read_and_hash(self, seg):
        key = object_key(seg)
        ctx = SegmentContext(camera=seg.camera, object_key=key, start=ms_to_rfc3339(seg.start_ms),
                             end=ms_to_rfc3339(seg.end_ms))
        key_id = self.keyring.current_kek_id
        sealer = sealers.setdefault(seg.camera, StreamingSealer())
        blob, size, sha, obj_sha = sealer.seal(self.spool.path(seg), ctx, key_id, self.keyring.kek(key_id))
        sealed[key] = (ctx, blob, obj_sha, key_id)
        return _Size(size), sha

    def seal(self, data, ctx):
        got = sealed.pop(ctx.object_key, None)
        if got is None or got[0] != ctx or not isinstance(data, _Size):
            raise RuntimeError("what-if seal: no streamed result for this segment")
        return got[1], got[2], got[3]

    Ingestor._read_and_hash = read_and_hash
    Ingestor._seal = seal

    def put(self, key, data, *, record, retain_until=None):
        written.add(key)
        if retain_until is not None and self.object_lock:
            return shipped_put(self, key, data, record=record, retain_until=retain_until)
        return put_with_known_sha256(self, key, data, record, record["object_sha256"])  # data: a memoryview

    def stat(self, key, version_id=None):
        if version_id is None and key not in written:
            return None
        return shipped_stat(self, key, version_id)

    ObjectStore.put = put
    ObjectStore.stat = stat


def main() -> int:
    from nvr.cli import main as nvr_main

    apply()
    return nvr_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
