"""RFC 3339 times: the strict form in, milliseconds out; every other form is refused, never truncated."""

import pytest

from nvr.base.times import ms_to_rfc3339, parse_rfc3339, parse_time_ms


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-11-29T13:00:00Z", 1_795_957_200_000),
    ("2026-11-29t13:00:00z", 1_795_957_200_000),
    ("2026-11-29T14:00:00+01:00", 1_795_957_200_000),
    ("2026-11-29T13:00:00.123Z", 1_795_957_200_123),
    ("2026-11-29T13:00:00.123456789Z", 1_795_957_200_123),
])
def test_rfc3339_forms(text, ms):
    assert parse_rfc3339(text) == ms
    assert parse_rfc3339(ms_to_rfc3339(ms)) == ms


@pytest.mark.parametrize("bad", [
    "2026-11-29T13:00:00Z\x00", "2026-11-29T13:00:00Z\n", " 2026-11-29T13:00:00Z", "2026-11-29T13:00:00Z junk",
    "2026-W49-1T00:00Z", "２０２６-11-29T13:00:00Z", "2026-11-29 13:00:00Z", "2026-11-29T13:00Z", "20261129T130000Z",
    "2026-11-29", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z", "2026-11-29T13:00:00+0100", "",
])
def test_other_forms_are_refused(bad):
    with pytest.raises(ValueError):
        parse_time_ms(bad)


def test_naive_time_says_what_is_missing():
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_rfc3339("2026-11-29T13:00:00")


def test_every_millisecond_round_trips_exactly():
    # Float arithmetic lost a millisecond on some times (547641621915 came back as ...914).
    import random
    from datetime import UTC, datetime

    rnd = random.Random(7)
    for ms in [547_641_621_915, 0, -1, 999, 86_399_999, *(rnd.randrange(-10**12, 4 * 10**12) for _ in range(20_000))]:
        text = ms_to_rfc3339(ms)
        assert text == datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert parse_rfc3339(text) == ms
