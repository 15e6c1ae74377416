"""Capped exponential back-off that resets after a healthy run (pure)."""

import random

from nvr.recording.backoff import Backoff

T0 = 1_764_421_200_000


def test_backoff_grows_caps_and_resets_after_healthy_run():
    b = Backoff(initial=1, maximum=30, healthy_after=60, rng=random.Random(1))
    delays = [b.next_delay(ran_for=2) for _ in range(8)]
    for i, d in enumerate(delays):
        base = min(30, 2**i)
        assert base / 2 <= d <= base
    assert max(delays) <= 30
    assert b.next_delay(ran_for=120) <= 1


def test_a_run_that_delivered_a_segment_resets_the_backoff():
    """A flapping camera (short good runs) comes back within the initial delay each time."""
    b = Backoff(initial=0.5, maximum=30, healthy_after=60, rng=random.Random(2))
    for _ in range(5):
        b.next_delay(ran_for=1)  # failed attempts while the camera was away: the delay grows
    assert b.attempt == 5
    assert b.next_delay(ran_for=10, delivered=True) <= 0.5  # back, recorded, dropped again: start over
