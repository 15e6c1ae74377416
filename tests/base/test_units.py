"""Durations and sizes with explicit units, as the config, the rules and the API write them."""
import pytest

from nvr.base.units import parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("10s", 10), ("250ms", 0.25),
                                               ("1.5m", 90), (15, 15), (2.5, 2.5), ("2w", 1209600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10", "ten s", "-5s", "5 parsecs", -1, True, "1d2h"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "n"), [("500GiB", 500 * 2**30), ("20GB", 20 * 10**9), ("1 KiB", 1024), (42, 42)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["20", "20gib", "-1GiB", 1.5, "GiB"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
