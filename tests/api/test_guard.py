"""The failed-authentication guard on its own: the bucket per address, the windows, the bound on addresses."""

from __future__ import annotations

from nvr.api.guard import AuthGuard, AuthLimits
from tests.support.wait import until


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict]] = []

    async def record(self, action: str, target: str, detail: dict, **_) -> None:
        self.entries.append((action, target, detail))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_bucket_refills_at_its_rate_and_other_addresses_are_untouched():
    clock, audit = Clock(), Audit()
    guard = AuthGuard(AuthLimits(burst=3, per_second=0.5, window=3600), audit, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):
        assert guard.retry_after("a") is None
        guard.failed("a", "unknown")
    assert guard.retry_after("a") == 2  # one failure back every 2 s
    assert guard.retry_after("b") is None
    clock.now += 2
    assert guard.retry_after("a") is None
    await guard.close()
    assert audit.entries == [("auth.failed", "a", {**audit.entries[0][2], "count": 4, "refused": 1,
                                                   "failures": {"unknown": 3}})]


async def test_a_window_is_written_once_when_it_ends():
    audit = Audit()
    guard = AuthGuard(AuthLimits(window=0.2), audit)  # type: ignore[arg-type]
    for reason in ("unknown", "unknown", "revoked"):
        guard.failed("a", reason)
    await until(lambda: audit.entries, timeout=5, what="the first window's entry, written when it ends")
    guard.failed("a", "unknown")  # a new window
    await guard.close()
    assert [(t, d["count"], d["failures"]) for _, t, d in audit.entries] == [
        ("a", 3, {"revoked": 1, "unknown": 2}), ("a", 1, {"unknown": 1})]


async def test_at_most_max_addresses_are_tracked_the_quietest_written_and_forgotten():
    audit = Audit()
    guard = AuthGuard(AuthLimits(max_addresses=3, window=3600), audit)  # type: ignore[arg-type]
    for n in range(5):
        guard.failed(f"10.0.0.{n}", "unknown")
    await until(lambda: len(audit.entries) >= 2, timeout=5, what="the forgotten addresses' entries")
    assert [t for _, t, _ in audit.entries] == ["10.0.0.0", "10.0.0.1"]
    await guard.close()
    assert sorted(t for _, t, _ in audit.entries) == [f"10.0.0.{n}" for n in range(5)]
