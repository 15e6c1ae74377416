"""The index on both backends: what the fixtures promise, migrations, refusals, and concurrent writers."""

from __future__ import annotations

import threading
import time

import pytest

from storage.errors import IndexError_, IndexMisconfigured
from storage.index import SCHEMA_VERSION, Index
from storage.ledger import ChainHead, segment_record
from tests.support.rawsql import sql_rows, tampering

pytestmark = pytest.mark.integration


def test_parts_use_the_backend_the_fixture_names(storage_parts, index_backend):
    assert storage_parts.index.dialect == index_backend
    assert storage_parts.index.schema_version() == SCHEMA_VERSION


def test_a_newer_schema_is_refused_and_left_alone(storage_parts):
    index = storage_parts.index
    with tampering(index) as tx:
        tx.execute("INSERT INTO schema_version (version, name, applied_ms) VALUES (?, 'from the future', 0)",
                   (SCHEMA_VERSION + 1,))
    target = index._engine.describe()
    index.close()
    with pytest.raises(IndexMisconfigured, match=f"schema version {SCHEMA_VERSION + 1}, newer than this nvr"):
        storage_parts.reopen_index()
    assert target  # the message named the index without a password (describe())


def _record(camera: str, size: int) -> dict:
    return segment_record(head=ChainHead(camera), start="2026-01-01T00:00:00Z", end="2026-01-01T00:00:02Z",
                          partial=False, size=size, sha256="a" * 64, object_key=f"segments/{camera}/0",
                          object_size=1, object_sha256="b" * 64, key_id="k", node="test")


def test_two_writers_racing_for_one_seq_never_fork_the_chain(storage_parts):
    # Two indexes on one database (as two processes would): the same seq with different content, at once.
    first = storage_parts.index
    other = storage_parts.reopen_index_copy()
    try:
        a, b = _record("cam", 1), _record("cam", 2)
        results: list[object] = []
        barrier = threading.Barrier(2)

        def write(index: Index, rec: dict) -> None:
            barrier.wait()
            try:
                results.append(index.insert_segment(rec, version_id=None))
            except IndexError_ as e:
                results.append(e)

        threads = [threading.Thread(target=write, args=(first, a)), threading.Thread(target=write, args=(other, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(type(r).__name__ for r in results) == ["IndexError_", "SegmentRow"]
        assert sql_rows(first, "SELECT COUNT(*) FROM ledger WHERE camera = 'cam'") == [(1,)]
        assert sql_rows(first, "SELECT COUNT(*) FROM segments WHERE camera = 'cam'") == [(1,)]
    finally:
        other.close()


def test_a_read_does_not_wait_for_an_open_write(storage_parts):
    # An ingest commit in progress (a write transaction held open) must not hold up the API's reads.
    index = storage_parts.index
    index.insert_segment(_record("cam", 1), version_id=None)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with tampering(index) as tx:
            tx.execute("UPDATE segments SET state = 'stored' WHERE camera = 'cam'")
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(10)
        done = threading.Event()
        got: list = []
        reader = threading.Thread(target=lambda: (got.append(index.segments("cam")), done.set()))
        reader.start()
        assert done.wait(5), "a read waited for the open write"
        assert [r.seq for r in got[0]] == [0]
        reader.join(5)
    finally:
        release.set()
        t.join(30)


def test_a_pinged_lock_outlasts_its_lapse(storage_parts, index_backend):
    # The retention sweep's lock: held for a whole sweep (minutes) with a lapse of seconds.
    if index_backend != "postgresql":
        pytest.skip("on SQLite the sweep lock is the process's own (one node)")
    first, other = storage_parts.index, storage_parts.reopen_index_copy()
    got: list[bool] = []
    try:
        with first.hold("retention-sweep", wait=False, lapse_s=1.0, keepalive=True) as held:
            assert held
            waiter = threading.Thread(target=lambda: got.extend(_take(other, "retention-sweep")))
            waiter.start()
            waiter.join(4.0)  # four lapses: a silent holder would have lost it after one
            assert waiter.is_alive() and not got, "a pinged holder lost its lock to a waiter"
        waiter.join(10)  # released at the block's end: the waiter gets it at once
        assert got == [True]  # (a holder whose pings stop loses it: the test below)
    finally:
        other.close()


def _take(index, name: str) -> list[bool]:
    with index.hold(name) as got:
        return [bool(got)]


def test_a_lock_whose_holder_went_silent_lapses_for_the_others(storage_parts, index_backend):
    # A node cut off from PostgreSQL while it holds a camera's chain lock: its session asks nothing more.
    if index_backend != "postgresql":
        pytest.skip("on SQLite the chain lock is the process's own (one node)")
    first, other = storage_parts.index, storage_parts.reopen_index_copy()
    try:
        with first.hold("chain:cam", lapse_s=1.0) as held:
            assert held
            with other.hold("chain:cam", wait=False) as got:
                assert not got  # held while its holder is alive
            # A waiting holder gets it once the server ends the silent session (after 1 s), within its own
            # statement timeout: the wait itself is the event, its time the assertion.
            t0 = time.monotonic()
            with other.hold("chain:cam") as got:
                waited = time.monotonic() - t0
                assert got
            assert waited < 10, f"a silent holder kept the lock {waited:.1f} s"
        # The lapsed holder's block ends without an error, and the lock can be taken again by anyone.
        with first.hold("chain:cam", wait=False, lapse_s=1.0) as again:
            assert again
    finally:
        other.close()
