"""Placing one ffmpeg run on the wall clock (pure)."""


import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvr.recording.recovery import place_partial
from nvr.recording.runclock import RunClock

T0 = 1_764_421_200_000


def test_first_segment_anchors_run_and_later_ones_are_contiguous():
    clock = RunClock(spawned_ms=T0, floor_ms=None, bound_ms=500)
    a = clock.place(0.0, 10.0, T0 + 10_400)
    b = clock.place(10.0, 20.0, T0 + 20_450)
    c = clock.place(20.0, 29.5, T0 + 29_900)
    assert (a.start_ms, a.end_ms) == (T0 + 400, T0 + 10_400)
    assert b.start_ms == a.end_ms and c.start_ms == b.end_ms
    assert c.end_ms - c.start_ms == 9500


def test_anchor_never_before_spawn_or_previous_run():
    # ffmpeg -re can emit a burst, so wall - stream_end is before the spawn time.
    early = RunClock(spawned_ms=T0, floor_ms=None, bound_ms=500).place(0.0, 2.0, T0 + 1790)
    assert early.start_ms == T0
    # The previous run ended later than this run's stream would place it: no overlap.
    late = RunClock(spawned_ms=T0, floor_ms=T0 + 5000, bound_ms=500).place(0.0, 2.0, T0 + 3000)
    assert late.start_ms == T0 + 5000


# (stream end, wall at close) of the segments after a first one of 10 s closing at T0 + 10 s; the placed
# ends and corrections expected. Jitter within the bound keeps the prediction; beyond it the run re-anchors.
PLACEMENT = [
    ("on time", [(20.0, 20_000), (30.0, 30_000)], [(20_000, 0), (30_000, 0)]),
    ("jitter within the bound", [(20.0, 20_450), (30.0, 29_700)], [(20_000, 0), (29_700, 0)]),
    ("stream clock stepped back 3 s", [(17.0, 20_000), (27.0, 30_000)], [(20_000, 3000), (30_000, 0)]),
    ("stream clock stepped ahead 3 s", [(23.0, 20_000), (33.0, 30_000)], [(20_000, -3000), (30_000, 0)]),
    ("pause of 5 s with a timestamp reset", [(20.0, 25_000), (30.0, 35_000)], [(25_000, 5000), (35_000, 0)]),
    ("slow drift crosses the bound once", [(20.0, 20_300), (30.0, 30_600), (40.0, 40_700)],
     [(20_000, 0), (30_600, 600), (40_600, 0)]),
]


@pytest.mark.parametrize(("case", "closes", "expected"), PLACEMENT, ids=[c[0] for c in PLACEMENT])
def test_each_segment_is_checked_and_reanchored_beyond_the_bound(case, closes, expected):
    clock = RunClock(spawned_ms=T0 - 1000, floor_ms=None, bound_ms=500)
    prev = clock.place(0.0, 10.0, T0 + 10_000)
    assert (prev.start_ms, prev.end_ms, prev.correction_ms) == (T0, T0 + 10_000, 0)
    stream = 10.0
    for (end_s, wall), (want_end, want_correction) in zip(closes, expected, strict=True):
        p = clock.place(stream, end_s, T0 + wall)
        assert (p.end_ms - T0, p.correction_ms) == (want_end, want_correction), case
        assert p.start_ms == prev.end_ms  # contiguous: a re-anchoring opens no hole and overlaps nothing
        assert p.end_ms <= T0 + wall  # never in the future
        prev, stream = p, end_s


def test_end_before_start_refused():
    with pytest.raises(ValueError):
        RunClock(spawned_ms=T0, floor_ms=None, bound_ms=500).place(5.0, 4.0, T0)


def test_the_run_is_anchored_once_two_observations_agree():
    clock = RunClock(spawned_ms=T0 - 9000, floor_ms=None, bound_ms=500)
    # Three lines came late (ffmpeg catching up after probing), the last two agree: the earlier of them.
    late = [(2.0, T0 + 4400), (4.0, T0 + 5100), (6.0, T0 + 6150), (8.0, T0 + 8100)]
    assert not clock.settle(late[:1]) and not clock.settle(late[:2]) and not clock.settle(late[:3])
    assert clock.settle(late) and clock.anchor_ms == T0 + 100
    # Every held segment is placed from that anchor; the first starts where its media does.
    first = clock.place(0.0, 2.0, T0 + 4400, media_s=1.6)
    assert (first.start_ms, first.end_ms, first.correction_ms) == (T0 + 500, T0 + 2100, 0)
    assert [clock.place(a, b, w, check=False) for a, b, w in ((2.0, 4.0, T0 + 5100), (4.0, 6.0, T0 + 6150))] == [
        type(first)(T0 + 2100, T0 + 4100, 0), type(first)(T0 + 4100, T0 + 6100, 0)]
    # A run that ends early anchors on what it has.
    short = RunClock(spawned_ms=T0 - 9000, floor_ms=None, bound_ms=500)
    assert short.settle([(2.0, T0 + 4400), (4.0, T0 + 5100)], final=True) and short.anchor_ms == T0 + 1100
    assert not short.settle([])


def test_the_last_segment_of_a_run_is_placed_by_the_prediction():
    # Its line came when ffmpeg gave up on a frozen camera, 6 s after the frames stopped: no correction.
    clock = RunClock(spawned_ms=T0 - 1000, floor_ms=None, bound_ms=500)
    clock.place(0.0, 2.0, T0 + 2000)
    last = clock.place(2.0, 2.5, T0 + 8500, check=False)
    assert (last.start_ms, last.end_ms, last.correction_ms) == (T0 + 2000, T0 + 2500, 0)


@given(
    floor=st.one_of(st.none(), st.integers(0, 10**6)),
    durations=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=20),
    lags=st.lists(st.integers(-20_000, 20_000), min_size=20, max_size=20),
)
def test_runs_never_overlap_their_floor_are_contiguous_and_never_in_the_future(floor, durations, lags):
    spawned = 500_000
    clock = RunClock(spawned_ms=spawned, floor_ms=floor, bound_ms=500)
    t, prev_end = 0.0, None
    for d, lag in zip(durations, lags, strict=False):
        wall = spawned + round((t + d) * 1000) + lag
        p = clock.place(t, t + d, wall)
        assert p.start_ms >= (floor or 0) and p.start_ms >= spawned
        assert p.end_ms >= p.start_ms
        assert p.end_ms <= max(wall, p.start_ms)
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
