"""Retention state in the index, as this stage's types: rules, holds, pending deletions, legal holds, runs.

The tables and their SQL are the index's (``storage/index/retention.py``,
``retention_*`` and ``segments.state``: 'stored' → 'pending_delete' →
'deleted', or back to 'stored' when a hold arrived before the object was
deleted); this module says what the rows mean.

Rules: every change is a new row of ``retention_rules`` (the highest version is
in force), so the history of rule changes is kept beside the audit log. Whose
word counts, as for cameras (``nvr/recording/registry.py``): the latest change wins. At
start the config file's rules are imported when they differ from the config
rules last imported (a hash is kept); otherwise the stored rules, possibly
changed over the API since, stay in force.

Holds are never deleted: a release sets ``released_ms``/``released_by``/
``release_reason``. Hold ids are ``hold-<n>`` with ``n`` from an AUTOINCREMENT
key, so an id is never reused.

``retention_pending`` carries what the ``segments`` row can't: the rule that
selected a segment (for its tombstone), the run that marked it, and the last
S3 error. A segment is marked pending and gets its pending row in one
transaction, and leaves both in one transaction.

``retention_legal_holds`` lists the object versions on which *this stage* set
an S3 legal hold, so releasing clears exactly those (and a legal hold set by
someone else directly in S3 is never touched).

Methods are synchronous (the index's are); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.errors import Conflict, NotFound
from nvr.config.retention import RuleSet, rules_from_dict, rules_to_dict
from retention.holds import HoldRecord
from storage.index import Index
from storage.ledger import canonical_json

# Runs are also audit events; the table keeps the recent ones for status and the API.
KEEP_RUNS = 1000


def rules_hash(rules: RuleSet) -> str:
    """SHA-256 of the canonical JSON form: how a start tells whether the config file's rules changed."""
    return hashlib.sha256(canonical_json(rules_to_dict(rules))).hexdigest()


@dataclass(frozen=True)
class StoredRules:
    """The rules in force, with where they came from."""

    rules: RuleSet
    version: int
    source: str  # 'config' or 'api'
    changed_ms: int
    actor: str
    config_hash: str | None


@dataclass(frozen=True)
class PendingDeletion:
    """A segment marked for deletion, with what its tombstone needs."""

    segment_id: str
    camera: str
    seq: int
    object_key: str
    version_id: str | None
    record_hash: str
    size: int
    start_ms: int
    end_ms: int
    rule: str
    run_id: int
    attempts: int
    error: str | None


@dataclass(frozen=True)
class LegalHoldEntry:
    """An object version on which this stage set an S3 legal hold."""

    segment_id: str
    camera: str
    object_key: str
    version_id: str | None


@dataclass(frozen=True)
class CoveredSegment:
    """A segment (stored or pending) overlapping an active hold."""

    segment_id: str
    camera: str
    object_key: str
    version_id: str | None
    state: str


class HoldNotFound(NotFound, LookupError):
    """No hold has this id."""


class HoldAlreadyReleased(Conflict, ValueError):
    """The hold was released before."""


def _hold(r: tuple) -> HoldRecord:
    n, case_id, cams, start, end, reason, expires, created, by, rel_ms, rel_by, rel_reason = r
    return HoldRecord(f"hold-{n}", case_id, tuple(json.loads(cams)) if cams is not None else None, start, end,
                      reason, expires, created, by, rel_ms, rel_by, rel_reason)


def hold_number(hold_id: str) -> int | None:
    """``7`` from ``hold-7``; None when ``hold_id`` is not a hold id."""
    prefix, _, n = hold_id.partition("-")
    if prefix != "hold" or not n.isdigit() or len(n) > 15 or n != str(int(n)):
        return None
    return int(n)


class RetentionStore:
    """Retention state in the index database."""

    def __init__(self, index: Index):
        self.index = index
        self._t = index.retention

    # ------------------------------------------------------------------ rules

    def current_rules(self) -> StoredRules | None:
        """The rules in force (the highest version), or None before the first import."""
        return _stored(self._t.current_rules())

    def import_config_rules(self, rules: RuleSet, *, now_ms: int) -> tuple[StoredRules | None, StoredRules]:
        """Make the config file's rules current if they changed since last imported; (old, current)."""
        digest = rules_hash(rules)

        def decide(row: tuple | None):
            if row is not None and _config_hash(row) == digest:
                return None
            return _rules_json(rules), "config", "config file", digest, now_ms
        old_row, version = self._t.put_rules(decide)
        old = _stored(old_row)
        if version is None:
            assert old is not None
            return old, old
        return old, StoredRules(rules, version, "config", now_ms, "config file", digest)

    def put_rules(self, rules: RuleSet, *, actor: str, now_ms: int, source: str = "api"
                  ) -> tuple[StoredRules | None, StoredRules]:
        """Store ``rules`` as a new version; (old, new)."""
        def decide(row: tuple | None):
            return _rules_json(rules), source, actor, _config_hash(row), now_ms  # the config hash is carried forward
        old_row, version = self._t.put_rules(decide)
        assert version is not None
        return _stored(old_row), StoredRules(rules, version, source, now_ms, actor, _config_hash(old_row))

    # ------------------------------------------------------------------ holds

    def holds(self, *, include_released: bool = True) -> list[HoldRecord]:
        """Holds by id order (the order they were placed)."""
        return [_hold(r) for r in self._t.holds(include_released=include_released)]

    def hold(self, hold_id: str) -> HoldRecord | None:
        """The hold with this id, or None (also for a string that is not a hold id)."""
        n = hold_number(hold_id)
        if n is None:
            return None
        row = self._t.hold(n)
        return _hold(row) if row else None

    def add_hold(self, *, case_id: str, cameras: Iterable[str] | None, start_ms: int, end_ms: int | None,
                 reason: str, expires_ms: int | None, actor: str, now_ms: int) -> HoldRecord:
        """A new hold, committed: it protects from this transaction on."""
        cams = sorted(set(cameras)) if cameras is not None else None
        n = self._t.add_hold(case_id=case_id, cameras=cams, start_ms=start_ms, end_ms=end_ms, reason=reason,
                             expires_ms=expires_ms, actor=actor, now_ms=now_ms)
        return HoldRecord(f"hold-{n}", case_id, tuple(cams) if cams is not None else None, start_ms, end_ms,
                          reason, expires_ms, now_ms, actor)

    def release_hold(self, hold_id: str, *, actor: str, reason: str, now_ms: int) -> HoldRecord:
        """Record the release on the hold's row; :class:`HoldNotFound` or :class:`HoldAlreadyReleased`."""
        n = hold_number(hold_id)
        row, released = self._t.release_hold(n, actor=actor, reason=reason, now_ms=now_ms) if n is not None \
            else (None, False)
        if row is None:
            raise HoldNotFound(f"hold {hold_id!r} does not exist", hold=hold_id)
        if not released:
            raise HoldAlreadyReleased(f"hold {hold_id} is already released", hold=hold_id)
        return _hold(tuple(row[:9]) + (now_ms, actor, reason))

    def expired_unnoted(self, now_ms: int) -> list[HoldRecord]:
        """Unreleased holds past their expiry whose expiry was not audited yet."""
        return [_hold(r) for r in self._t.expired_unnoted(now_ms)]

    def note_expired(self, hold_id: str) -> None:
        """The hold's expiry has been audited (so it is audited once)."""
        n = hold_number(hold_id)
        if n is not None:
            self._t.note_expired(n)

    def covered_segments(self, holds: Iterable[HoldRecord]) -> dict[str, CoveredSegment]:
        """Segments not deleted that overlap any of ``holds`` (strictly, as the policy's ``Hold.overlaps``)."""
        out: dict[str, CoveredSegment] = {}
        for h in holds:
            for sid, cam, key, vid, state in self._t.covered(h.start_ms, h.end_ms, h.cameras):
                out[sid] = CoveredSegment(sid, cam, key, vid, state)
        return out

    # ------------------------------------------------------------------ legal holds

    def legal_holds(self) -> dict[str, LegalHoldEntry]:
        """Segment id -> the legal hold this stage set on its object."""
        return {r[0]: LegalHoldEntry(*r) for r in self._t.legal_holds()}

    def add_legal_hold(self, seg: CoveredSegment, now_ms: int) -> None:
        """Note a legal hold set on ``seg``'s object version."""
        self._t.add_legal_hold(seg.segment_id, seg.camera, seg.object_key, seg.version_id, now_ms)

    def remove_legal_hold(self, segment_id: str) -> None:
        """Forget the legal hold of ``segment_id`` (cleared in S3, or its object is gone)."""
        self._t.remove_legal_hold(segment_id)

    def segment_states(self, ids: Iterable[str]) -> dict[str, str]:
        """Segment id -> state, for the ids the index knows."""
        return self.index.segment_states(ids)

    # ------------------------------------------------------------------ segments for the decision

    def live_segments(self) -> list[tuple[str, str, int, int, int, str, int]]:
        """(id, camera, start_ms, end_ms, object_size, state, ingested_ms) of every segment not deleted."""
        return self._t.live_segments()

    def usage_bytes(self) -> int:
        """Bytes in the bucket per the index: the object size of every segment not deleted."""
        return self._t.usage_bytes()

    # ------------------------------------------------------------------ two-phase deletion

    def mark_pending(self, selected: Iterable[tuple[str, str]], *, run_id: int, now_ms: int) -> list[str]:
        """Sweep step 2, one transaction: stored → pending_delete with the rule; the ids actually marked."""
        return self._t.mark_pending(selected, run_id=run_id, now_ms=now_ms)

    def pending(self) -> list[PendingDeletion]:
        """Every segment in state pending_delete (this run's and earlier runs'), by camera and seq."""
        return [PendingDeletion(*r) for r in self._t.pending()]

    def pending_count(self) -> int:
        """How many segments are in state pending_delete."""
        return self._t.pending_count()

    def note_failures(self, errors: Mapping[str, str]) -> None:
        """Count a failed attempt and keep the last S3 error (cut to 500 characters) of each segment."""
        self._t.note_failures(errors)

    def unmark(self, segment_id: str) -> None:
        """A hold arrived before the object was deleted: back to stored."""
        self._t.unmark(segment_id)

    def tombstone_seq(self, camera: str, segment_seq: int) -> int | None:
        """The ledger seq of an existing tombstone for ``camera``'s segment ``segment_seq`` (resume check)."""
        return self.index.tombstone_seq(camera, segment_seq)

    # ------------------------------------------------------------------ runs

    def start_run(self, trigger: str, now_ms: int) -> int:
        """A new run's id; runs older than the last :data:`KEEP_RUNS` are dropped."""
        return self._t.start_run(trigger, now_ms, keep=KEEP_RUNS)

    def finish_run(self, run_id: int, report: Mapping[str, Any], now_ms: int) -> None:
        """Keep the run's report."""
        self._t.finish_run(run_id, report, now_ms)


def _config_hash(row: tuple | None) -> str | None:
    """The config-file hash a ``retention_rules`` row carries (None before the first rules)."""
    return row[5] if row is not None else None


def _rules_json(rules: RuleSet) -> str:
    return json.dumps(rules_to_dict(rules), sort_keys=True)


def _stored(row: tuple | None) -> StoredRules | None:
    """The stored rules of a ``retention_rules`` row."""
    if row is None:
        return None
    version, rules, source, changed_ms, actor, config_hash = row
    return StoredRules(rules_from_dict(json.loads(rules)), version, source, changed_ms, actor, config_hash)
