"""Concurrency limits on clips (pure): per key and in total, 429 with Retry-After, released on exit."""

import pytest

from nvr.api.limits import ConcurrencyLimit
from nvr.api.problem import Problem


def test_per_key_and_total_limits_refuse_with_retry_after_and_release():
    limit = ConcurrencyLimit("clips", total=3, per_key=2)
    with limit.hold("a"), limit.hold("a"):
        with pytest.raises(Problem) as refused:
            with limit.hold("a"):
                pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"]
        assert "clips_per_token" in refused.value.detail
        with limit.hold("b"):
            with pytest.raises(Problem) as full:
                with limit.hold("c"):
                    pass
            assert "server.clips" in full.value.detail
    assert not limit.active  # every hold released, also after a refusal or an error inside
    with pytest.raises(RuntimeError), limit.hold("a"):
        raise RuntimeError("the clip failed")
    assert not limit.active


def test_zero_means_no_limit():
    limit = ConcurrencyLimit("clips", total=0, per_key=0)
    holds = [limit.hold("a") for _ in range(50)]
    for h in holds:
        h.__enter__()
    assert limit.active["a"] == 50
