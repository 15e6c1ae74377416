"""Writing a bundle: VERIFY.txt, the signed manifest, SHA256SUMS and its signature, the zip."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvr.base.units import format_size
from nvr.custody.bundle.layout import (
    BUNDLE_FORMAT,
    MANIFEST,
    MANIFEST_SIG,
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    MAX_SUMS_BYTES,
    PUBLIC,
    SUMS,
    SUMS_SIG,
    VERIFY_TXT,
)
from nvr.custody.bundle.source import TooLarge
from nvr.custody.checkpoint import fingerprint
from storage.envelope import sha256_file
from storage.keyring import SigningKey


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _too_large(what: str, n: str, limit: str) -> TooLarge:
    """Refusal to write a bundle the checker would refuse to read."""
    return TooLarge(f"{what} would be {n}, over the {limit} a bundle may have: export a shorter range or fewer "
                    "cameras")


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """manifest.json as stored and signed: indented JSON, keys sorted, UTF-8."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def verify_txt(*, top: str, manifest: Mapping[str, Any]) -> str:
    """VERIFY.txt: how to check the bundle with unzip, sha256sum and openssl only."""
    key = manifest["signing_key"]
    n = len(manifest.get("segments", []))
    return f"""Evidence bundle {top}: how to check it with standard tools only
{"=" * (len(top) + 54)}

Case {manifest.get("case_id")!r}, exported {manifest.get("exported_at")} by {manifest.get("exported_by")}
from node {manifest.get("node")!r} (nvr {manifest.get("software", {}).get("version")}).
Range {manifest["range"]["start"]} to {manifest["range"]["end"]}, cameras: {", ".join(manifest.get("cameras", []))}.

Contents: {n} original segment(s) under segments/ (decrypted, byte for byte as
recorded, never re-encoded); one stitched clip per camera under clips/ (for
viewing convenience only: the segments are the evidence); manifest.json (what
was exported, with the hash-chained ledger records and the signed checkpoints
that prove it); SHA256SUMS (the SHA-256 of every other file); and Ed25519
signatures made with the recorder node's key (public.pem).

You need: unzip, sha256sum (GNU coreutils) and OpenSSL 3.0 or later.

1. Unpack the bundle and enter its directory:

       unzip {top}.zip
       cd {top}

2. Check that every file is intact. Every line must end in "OK" and the
   command must exit with status 0 (--strict also rejects a damaged line):

       sha256sum --strict -c SHA256SUMS

3. Check that SHA256SUMS was signed by the key in public.pem. OpenSSL must
   print "Signature Verified Successfully":

       openssl pkeyutl -verify -pubin -inkey public.pem -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig

4. Check the manifest's signature the same way:

       openssl pkeyutl -verify -pubin -inkey public.pem -rawin -in manifest.json -sigfile manifest.sig

5. Check WHO signed it. Steps 3 and 4 prove only that the holder of the
   private key matching public.pem made this bundle, and anyone can make a
   key pair and a bundle that passes them. What ties the bundle to the
   recorder node is the key's fingerprint, compared with the fingerprint the
   node's operator publishes out of band: obtained from the operator directly
   (a signed statement, a letter, read out in person), never from this bundle
   or from the channel that delivered it.

   a. Print public.pem's fingerprint (64 hex digits, then "-"):

          openssl pkey -pubin -in public.pem -outform DER | sha256sum

      For this bundle it should be
          {key["fingerprint_sha256"]}
      (key id {key["key_id"]}), but that line is part of the bundle: rely on
      what the command prints.

   b. Ask the operator for the node's published fingerprints. On the node,
      `nvr keys list` prints one line per signing key:
          signing <key id> <fingerprint>
      (also GET /api/v1/keys on the nvr server, field "fingerprint_sha256").
      Old keys stay listed after a rotation, so older bundles still match.

   c. Compare all 64 digits with the one for key id {key["key_id"]}. They must be
      identical. If they differ, or the operator published none, the bundle
      does not prove where it came from: do not rely on it.

   `nvr verify-bundle {top}.zip --fingerprint <the published fingerprint>`
   makes this comparison too (without a trusted key it reports "signatures
   valid but by an untrusted key" and fails).

6. Optional, deeper: each segment's SHA-256 (sha256sum segments/<camera>/<file>)
   equals "sha256" in its entry of manifest.json and in its ledger record
   (manifest.json, "ledger"). A record's hash is the SHA-256 of its canonical
   JSON (keys sorted, no whitespace, UTF-8); each record's "prev" is the hash
   of the record before it; each checkpoint's "body" is signed (Ed25519, hex
   "signature", public keys in "keys") and its "head" is the hash of the
   record at its "seq", which anchors every record before it.
   `nvr verify-bundle {top}.zip` performs all of these checks.

If any step fails, the bundle was changed after it was exported: do not rely on it.
"""


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    size: int
    sha256: str
    manifest_sha256: str


def write_bundle(root: Path, *, top: str, manifest: dict[str, Any], key: SigningKey, out: Path) -> BundleInfo:
    """Finish the bundle staged in ``root`` (segments/ and clips/ already there) and zip it to ``out``.

    Adds public.pem, VERIFY.txt, manifest.json (+ .sig), SHA256SUMS (+ .sig); blocking.
    """
    manifest = dict(manifest)
    manifest["format"] = BUNDLE_FORMAT
    manifest["signing_key"] = {"key_id": key.key_id, "algorithm": "Ed25519",
                               "fingerprint_sha256": fingerprint(key.public), "file": PUBLIC}
    keys = dict(manifest.get("keys", {}))
    keys[key.key_id] = key.public_pem().decode("ascii")
    manifest["keys"] = keys
    _write_private(root / PUBLIC, key.public_pem())
    _write_private(root / VERIFY_TXT, verify_txt(top=top, manifest=manifest).encode("utf-8"))
    mbytes = manifest_bytes(manifest)
    if len(mbytes) > MAX_MANIFEST_BYTES:
        raise _too_large(MANIFEST, format_size(len(mbytes)), format_size(MAX_MANIFEST_BYTES))
    _write_private(root / MANIFEST, mbytes)
    _write_private(root / MANIFEST_SIG, key.private.sign(mbytes))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    files = [f for f in files if f not in (SUMS, SUMS_SIG) and not f.startswith("tmp/")]
    if len(files) + 2 > MAX_MEMBERS:
        raise _too_large("the bundle's file count", str(len(files) + 2), str(MAX_MEMBERS))
    sums = "".join(f"{sha256_file(root / f)[0]}  {f}\n" for f in files).encode("utf-8")
    if len(sums) > MAX_SUMS_BYTES:
        raise _too_large(SUMS, format_size(len(sums)), format_size(MAX_SUMS_BYTES))
    _write_private(root / SUMS, sums)
    _write_private(root / SUMS_SIG, key.private.sign(sums))
    tmp = out.with_name(f".{out.name}.part")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for name in [*files, SUMS, SUMS_SIG]:
            stored = name.endswith(".mp4")
            zf.write(root / name, f"{top}/{name}", compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)
    digest, size = sha256_file(out)
    return BundleInfo(path=out, size=size, sha256=digest, manifest_sha256=hashlib.sha256(mbytes).hexdigest())
