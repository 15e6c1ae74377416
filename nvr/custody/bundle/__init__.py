"""Evidence bundles: ``layout`` (the format and its file names), ``write`` (make one), ``check`` (verify one)."""

from nvr.custody.bundle.check import BundleCheck, BundleError, BundleReport, verify_bundle
from nvr.custody.bundle.layout import (
    BUNDLE_FORMAT,
    MANIFEST,
    MANIFEST_SIG,
    PUBLIC,
    SUMS,
    SUMS_SIG,
    VERIFY_TXT,
    clip_file,
    segment_file,
)
from nvr.custody.bundle.write import BundleInfo, manifest_bytes, verify_txt, write_bundle

__all__ = [
    "BUNDLE_FORMAT", "MANIFEST", "MANIFEST_SIG", "PUBLIC", "SUMS", "SUMS_SIG", "VERIFY_TXT", "BundleCheck",
    "BundleError", "BundleInfo", "BundleReport", "clip_file", "manifest_bytes", "segment_file", "verify_bundle",
    "verify_txt", "write_bundle",
]
