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
