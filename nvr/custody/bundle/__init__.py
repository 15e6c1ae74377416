"""Evidence bundles: ``layout`` (the format, its file names and size limits), ``schema`` (the manifest's),
``write`` (make one), ``source`` (read one's files within limits), ``check`` (verify one)."""

from nvr.custody.bundle.check import (
    VERDICT_FAILED,
    VERDICT_OK,
    VERDICT_UNTRUSTED,
    BundleCheck,
    BundleReport,
    anchors_of,
    verify_bundle,
)
from nvr.custody.bundle.layout import (
    BUNDLE_FORMAT,
    MANIFEST,
    MANIFEST_SIG,
    MAX_CLIP_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_SMALL_BYTES,
    MAX_SUMS_BYTES,
    PUBLIC,
    SUMS,
    SUMS_SIG,
    VERIFY_TXT,
    clip_file,
    segment_file,
)
from nvr.custody.bundle.schema import MANIFEST_SCHEMA, ManifestError, parse_manifest
from nvr.custody.bundle.source import BundleError, TooLarge
from nvr.custody.bundle.write import BundleInfo, manifest_bytes, verify_txt, write_bundle

__all__ = [
    "BUNDLE_FORMAT", "MANIFEST", "MANIFEST_SCHEMA", "MANIFEST_SIG", "MAX_CLIP_BYTES", "MAX_MANIFEST_BYTES",
    "MAX_SEGMENT_BYTES", "MAX_SMALL_BYTES", "MAX_SUMS_BYTES", "PUBLIC", "SUMS", "SUMS_SIG", "VERDICT_FAILED",
    "VERDICT_OK", "VERDICT_UNTRUSTED", "VERIFY_TXT", "BundleCheck", "BundleError", "BundleInfo", "BundleReport",
    "ManifestError", "TooLarge", "anchors_of", "clip_file", "manifest_bytes", "parse_manifest", "segment_file",
    "verify_bundle", "verify_txt", "write_bundle",
]
