"""Exception hierarchy of the storage package: every error carries the context to act on."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage failure; ``code`` is the S3 error code when S3 refused the request."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


class TransientStorageError(StorageError):
    """The object store did not answer or answered 5xx: retry later, keep the spool file."""


class EmbeddedS3Error(StorageError):
    """The embedded SeaweedFS server could not be started or stopped."""


class KeyringError(StorageError):
    """A key is missing, unreadable or has unsafe permissions."""


class IntegrityError(StorageError):
    """Bytes do not match what the ledger recorded: tampering or corruption."""

    def __init__(self, message: str, *, segment: str | None = None, check: str | None = None):
        super().__init__(message)
        self.segment = segment
        self.check = check


class IndexError_(StorageError):
    """The SQLite index is unusable or contradicts itself."""
