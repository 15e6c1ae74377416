"""Verification of stored footage against the ledger and its signed checkpoints.

Four modules, so the rules can be tested without S3:

* ``report``: the result model (statuses, findings, problems, gaps, the verdict, JSON);
* ``assess``: the pure core, :func:`assess`: given one camera's ledger records
  (by the seq the index stores them at), its index rows, its tombstones, the
  signed checkpoints and what fetching each object showed, it names every
  failed check;
* ``objects``: :func:`check_object`, the blocking fetch, hash and decrypt checks of one object;
* ``gather``: :func:`verify_range` / :func:`verify_segment` gather those facts
  from the index and the bucket (blocking work on threads and the store's pool),
  then call :func:`assess`.

Each module's docstring lists the checks it names; docs/custody.md says what each proves.
"""

from nvr.custody.verify.assess import LedgerView, ObjectCheck, assess, segment_times
from nvr.custody.verify.gather import (
    Evidence,
    UnknownSegment,
    verify_range,
    verify_segment,
    verify_with_evidence,
)
from nvr.custody.verify.objects import PlaintextSink, check_object
from nvr.custody.verify.report import (
    STATUS_DELETED,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_TAMPERED,
    STATUS_UNANCHORED,
    STATUSES,
    VERDICT_FAILED,
    VERDICT_OK,
    VERDICT_UNANCHORED,
    Finding,
    Gap,
    Problem,
    SegmentResult,
    VerifyReport,
    combine,
)

__all__ = [
    "STATUSES", "STATUS_DELETED", "STATUS_MISSING", "STATUS_OK", "STATUS_TAMPERED", "STATUS_UNANCHORED",
    "VERDICT_FAILED", "VERDICT_OK", "VERDICT_UNANCHORED", "Evidence", "Finding", "Gap", "LedgerView",
    "ObjectCheck", "PlaintextSink", "Problem", "SegmentResult", "UnknownSegment", "VerifyReport", "assess",
    "check_object", "combine", "segment_times", "verify_range", "verify_segment", "verify_with_evidence",
]
