"""The rules in force: persisted versions, the latest change wins, every change audited, a raised floor resets."""

from __future__ import annotations

import pytest

from nvr.config.retention import Rule, RuleSet

pytestmark = pytest.mark.integration


async def test_rules_persist_latest_change_wins_and_every_change_is_audited(env):
    cfg_a = RuleSet(default=Rule(max_age=30 * 86400.0))
    svc = await env.service(cfg_a)
    assert svc.stored.source == "config" and svc.rules.default.max_age == 30 * 86400
    assert svc.rules.default.min_age == 60.0  # the floor fills the default's min_age
    b = svc.parse_rules({"default": {"max_age": "7d"}, "cameras": {"gate": {"max_bytes": "1GiB"}}})
    await svc.set_rules(b, ("token:admin", "admin"))
    await svc.set_camera_rule("lobby", {"max_age": "2d"}, ("token:admin", "admin"))
    await svc.delete_camera_rule("gate", ("token:admin", "admin"))
    with pytest.raises(KeyError):
        await svc.delete_camera_rule("gate", ("token:admin", "admin"))

    same = await env.restart(svc)  # config file unchanged: the API's rules stay
    assert same.stored.source == "api" and same.rules.default.max_age == 7 * 86400
    assert set(same.rules.cameras) == {"lobby"}
    await same.stop()
    changed = await env.service(RuleSet(default=Rule(max_age=90 * 86400.0)))  # config edited: it wins now
    assert changed.stored.source == "config" and changed.rules.default.max_age == 90 * 86400

    updates = env.actions("retention.rules.update")
    assert [e.actor for e in updates] == ["system", "token:admin", "system"]
    assert updates[1].detail["old"]["default"]["max_age"] == "30d" and updates[1].detail["new"]["default"] == {
        "max_age": "1w", "min_age": "1m"}
    cams = env.actions("retention.rules.camera")
    assert [(e.target, e.detail["old"], e.detail["new"]) for e in cams] == [
        ("lobby", None, {"max_age": "2d"}), ("gate", {"max_bytes": "1GiB"}, None)]

    await changed.stop()
    # The API lowered min_age; then the config's floor was raised past it, the file's rules unchanged:
    # the stored rules are no longer allowed, the config file's replace them, loudly.
    explicit = RuleSet(default=Rule(max_age=90 * 86400.0, min_age=3 * 3600.0))
    first = await env.service(explicit)
    await first.set_rules(first.parse_rules({"default": {"max_age": "30d", "min_age": "1m"}}), ("token:a", "admin"))
    await first.stop()
    raised = await env.service(explicit, floor=2 * 3600.0)
    assert raised.rules == explicit and raised.stored.source == "config"
    [reset] = env.actions("retention.rules.reset")
    assert "cameras" not in reset.detail["error"] and "default.min_age" in reset.detail["error"]
    assert reset.detail["old"]["default"]["min_age"] == "1m"
