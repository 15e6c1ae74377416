"""The evidence bundle format: a zip that proves itself with ``sha256sum`` and ``openssl`` alone.

Layout (every path under one top directory named after the export id, so
unzipping never spills files into the current directory)::

    <export id>/
      segments/<camera>/<seq, 12 digits>_<start, YYYYMMDDTHHMMSSmmmZ>.mp4
                         the original segments, decrypted, byte-for-byte as recorded
      clips/<camera>.mp4 one stitched clip per camera over the range (stream copy;
                         for viewing only, the segments are the evidence)
      manifest.json      what was exported and the ledger that proves it (below)
      manifest.sig       Ed25519 signature (64 raw bytes) of manifest.json's bytes
      SHA256SUMS         "<hex>  <path>" for every other file (not itself, not its .sig)
      SHA256SUMS.sig     Ed25519 signature of SHA256SUMS's bytes
      public.pem         the node's signing public key (SubjectPublicKeyInfo PEM)
      VERIFY.txt         step-by-step checking with unzip, sha256sum and openssl

Both signatures check with ``openssl pkeyutl -verify -pubin -inkey public.pem
-rawin -in <file> -sigfile <file>.sig`` (OpenSSL 3.0+). Signing SHA256SUMS as
well as the manifest means a changed byte in *any* file fails a standard tool:
files listed in SHA256SUMS fail ``sha256sum -c``, SHA256SUMS and the two
signatures fail ``openssl``.

``manifest.json`` (indented JSON, keys sorted)::

    format           "nvr-evidence-bundle/1"
    export_id, case_id, reason, exported_by, exported_by_role, exported_at, node,
    software {name, version}
    range            {start, end}; cameras [ids]
    signing_key      {key_id, algorithm, fingerprint_sha256 (of the DER public key), file}
    segments         [{id, camera, seq, start, end, duration, partial, size, sha256, file,
                       record_hash, object_sha256, key_id, checkpoint}]
    excluded         segments in range not exported: [{id, status, check, detail, rule, deleted_at}]
    gaps             [{camera, start, end, seconds}]
    clips            [{camera, file, size, sha256, segments, gaps} | {camera, file: null, error}]
    ledger           {camera: {records: [ledger records from the one before the first exported
                       segment to the checkpoint covering the last], checkpoints: [{alg, body,
                       signature}]}}
    keys             {key_id: PEM} of every key that signed a checkpoint or the manifest
    verification     the range's verification summary at export time

Size limits (``MAX_*`` below) bound every file the checker reads, by the
zip's declared size and again while reading: metadata files have fixed
ceilings (the writer refuses a manifest over its own), a segment or clip may
be no larger than its manifest entry says nor than its ceiling.

``write.py`` makes a bundle; ``schema.py`` is the manifest's schema; ``source.py``
reads a bundle's files within the limits; ``check.py`` (``nvr verify-bundle``)
checks one offline.
"""

from __future__ import annotations

from nvr.base.times import ms_to_datetime

BUNDLE_FORMAT = "nvr-evidence-bundle/1"
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"
SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"
PUBLIC = "public.pem"
VERIFY_TXT = "VERIFY.txt"

MAX_MANIFEST_BYTES = 32 * 2**20  # ~30,000 segments with their ledger records
MAX_SUMS_BYTES = 16 * 2**20      # one ~100-byte line per file
MAX_SMALL_BYTES = 2**20          # public.pem, the signatures, VERIFY.txt, any file the manifest doesn't size
MAX_SEGMENT_BYTES = 16 * 2**30   # ten minutes (the longest segment) at over 200 Mbit/s
MAX_CLIP_BYTES = 1024 * 2**30    # a camera's clip of the longest export
MAX_MEMBERS = 200_000            # files in one zip: the central directory is read whole


def segment_file(camera: str, seq: int, start_ms: int) -> str:
    """Where a segment goes in the bundle: ``segments/<camera>/<seq>_<start>.mp4``."""
    t = ms_to_datetime(start_ms)
    return f"segments/{camera}/{seq:012d}_{t:%Y%m%dT%H%M%S}{start_ms % 1000:03d}Z.mp4"


def clip_file(camera: str) -> str:
    """Where a camera's stitched clip goes in the bundle."""
    return f"clips/{camera}.mp4"
