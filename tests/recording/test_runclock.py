"""Placing one ffmpeg run on the wall clock (pure)."""


import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvr.recording.recovery import place_partial
from nvr.recording.runclock import RunClock

T0 = 1_764_421_200_000


def test_first_segment_anchors_run_and_later_ones_are_contiguous():
    clock = RunClock(spawned_ms=T0, floor_ms=None, max_drift_ms=10_000)
    a = clock.place(0.0, 10.0, T0 + 10_400)
    b = clock.place(10.0, 20.0, T0 + 20_300)
    c = clock.place(20.0, 29.5, T0 + 29_900)
    assert (a.start_ms, a.end_ms) == (T0 + 400, T0 + 10_400)
    assert b.start_ms == a.end_ms and c.start_ms == b.end_ms
    assert c.end_ms - c.start_ms == 9500


def test_anchor_never_before_spawn_or_previous_run():
    # ffmpeg -re can emit a burst, so wall - stream_end is before the spawn time.
    early = RunClock(spawned_ms=T0, floor_ms=None, max_drift_ms=10_000).place(0.0, 2.0, T0 + 1790)
    assert early.start_ms == T0
    # The previous run ended later than this run's stream would place it: no overlap.
    late = RunClock(spawned_ms=T0, floor_ms=T0 + 5000, max_drift_ms=10_000).place(0.0, 2.0, T0 + 3000)
    assert late.start_ms == T0 + 5000


def test_drift_detected():
    clock = RunClock(spawned_ms=T0, floor_ms=None, max_drift_ms=5_000)
    clock.place(0.0, 10.0, T0 + 10_000)
    ok = clock.place(10.0, 20.0, T0 + 21_000)
    bad = clock.place(20.0, 30.0, T0 + 40_000)
    assert not clock.drifted(ok) and clock.drifted(bad)


def test_end_before_start_refused():
    with pytest.raises(ValueError):
        RunClock(spawned_ms=T0, floor_ms=None, max_drift_ms=1).place(5.0, 4.0, T0)


@given(
    floor=st.one_of(st.none(), st.integers(0, 10**6)),
    durations=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=20),
    lag=st.integers(-2000, 5000),
)
def test_runs_never_overlap_their_floor_and_are_contiguous(floor, durations, lag):
    spawned = 500_000
    clock = RunClock(spawned_ms=spawned, floor_ms=floor, max_drift_ms=10_000)
    t, prev_end = 0.0, None
    for d in durations:
        p = clock.place(t, t + d, spawned + round((t + d) * 1000) + lag)
        assert p.start_ms >= (floor or 0) and p.start_ms >= spawned
        assert p.end_ms >= p.start_ms
        if prev_end is not None:
            assert p.start_ms == prev_end
        prev_end, t = p.end_ms, t + d


def test_partial_placement():
    # A later file of a run continues the previous segment.
    assert place_partial(n=3, run_start_ms=T0, floor_ms=T0 + 30_000, mtime_ms=T0 + 34_500, duration_ms=4_000) == (
        T0 + 30_000, T0 + 34_000)
    # The first file of a run: last write minus duration, but after the previous run.
    assert place_partial(n=0, run_start_ms=T0, floor_ms=T0 - 50_000, mtime_ms=T0 + 6_000, duration_ms=4_000) == (
        T0 + 2_000, T0 + 6_000)
    assert place_partial(n=0, run_start_ms=T0, floor_ms=T0 + 3_000, mtime_ms=T0 + 6_000, duration_ms=4_000) == (
        T0 + 3_000, T0 + 7_000)
