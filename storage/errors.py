"""Storage failures, as kinds of the one hierarchy (``nvr.base.errors``)."""

from __future__ import annotations

import enum

from nvr.base.errors import Kind, NvrError


class Cause(enum.StrEnum):
    """Why S3 did not do what was asked, in the words an alarm uses."""

    UNREACHABLE = "unreachable"  # no answer: connection refused or reset, timeout, DNS
    FAILING = "failing"          # it answered 5xx
    DENIED = "denied"            # credentials or policy refuse us
    FULL = "full"                # out of space or over quota
    REFUSED = "refused"          # any other 4xx


# S3 codes that mean our credentials or policy, and those that mean no space.
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                          "AccountProblem", "InvalidToken", "ExpiredToken"})
FULL_CODES = frozenset({"XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "StorageFull"})


class StorageError(NvrError):
    """S3 or the index refused a request; ``code`` is the S3 error code when S3 answered one."""

    kind = Kind.REFUSED

    def __init__(self, message: str, *, code: str | None = None, kind: Kind | None = None,
                 cause: Cause | None = None):
        super().__init__(message, kind=kind, **({"code": code} if code else {}))
        self.code = code
        self.cause = cause or (Cause.DENIED if code in DENIED_CODES else Cause.FULL if code in FULL_CODES
                               else Cause.REFUSED)


class TransientStorageError(StorageError):
    """The object store did not answer or answered 5xx: retry later, keep the spool file."""

    kind = Kind.UNAVAILABLE

    def __init__(self, message: str, *, code: str | None = None, cause: Cause = Cause.UNREACHABLE):
        super().__init__(message, code=code, cause=cause)


class EmbeddedS3Error(StorageError):
    """The embedded SeaweedFS server could not be started or stopped."""

    kind = Kind.UNAVAILABLE


class KeyringError(StorageError):
    """A key is missing, unreadable or has unsafe permissions: the operator restores the keyring."""

    kind = Kind.MISCONFIGURED


class IntegrityError(StorageError):
    """Bytes do not match what the ledger recorded: tampering or corruption."""

    kind = Kind.DATA_LOSS

    def __init__(self, message: str, *, segment: str | None = None, check: str | None = None):
        super().__init__(message)
        self.segment = segment
        self.check = check
        self.context.update({k: v for k, v in (("segment", segment), ("check", check)) if v})


class IndexError_(StorageError):
    """The index is unusable or contradicts itself."""

    kind = Kind.INTERNAL


class IndexUnavailable(IndexError_):
    """The index database can't answer now (locked, unreachable, out of space): retry later."""

    kind = Kind.UNAVAILABLE


class IndexConflict(IndexError_):
    """A write the database refused because another writer got there first (a unique key, a stale head)."""

    kind = Kind.CONFLICT


class IndexMisconfigured(IndexError_):
    """The index can't be used as configured: a newer schema than this code, a bad URL, a missing driver."""

    kind = Kind.MISCONFIGURED
