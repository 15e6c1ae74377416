"""Rules as this deployment accepts them: the policy's validation plus the config's ``retention.min_age`` floor.

Light on imports (only ``retention.policy``), so ``nvr/config.py`` can validate
``[retention]`` with it at parse time.

* ``retention.min_age`` is the floor: footage younger than that is never
  deleted whatever a rule says, and with object lock it is also the
  GOVERNANCE retention ingest writes. A rule set whose ``min_age`` (default or
  any camera) is below it is refused, naming the field, so every accepted rule
  deletes only after S3 allows it.
* A rule set that gives no default ``min_age`` gets the floor (not the
  policy's 24 h fallback): ``{"default": {"max_age": "1m"}}`` with a one-minute
  floor is a valid one-minute retention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .policy import (
    RetentionRuleError,
    RuleSet,
    format_duration,
    rules_from_dict,
    validate_rules,
)


def with_floor(rules: RuleSet, floor: float) -> RuleSet:
    """``rules`` with the default ``min_age`` set to ``floor`` when unset; refuses any ``min_age`` below it."""
    if rules.default.min_age is None:
        rules = replace(rules, default=replace(rules.default, min_age=floor))
    validate_rules(rules)
    scopes = [("default", rules.default), *((f"cameras.{c}", r) for c, r in sorted(rules.cameras.items()))]
    for scope, rule in scopes:
        if rule.min_age is not None and rule.min_age < floor:
            raise RetentionRuleError(
                f"{scope}.min_age",
                f"{format_duration(rule.min_age)} is below retention.min_age ({format_duration(floor)}) of the config: "
                "footage younger than that is never deleted (and stays object-locked where enabled)")
    return rules


def parse_rules(data: Mapping[str, Any], floor: float) -> RuleSet:
    """A rule set from its JSON/TOML form, the default ``min_age`` being ``floor`` unless given."""
    if isinstance(data, Mapping) and isinstance(data.get("default", {}), Mapping):
        default = dict(data.get("default", {}))
        default.setdefault("min_age", format_duration(floor))
        data = {**data, "default": default}
    return with_floor(rules_from_dict(data), floor)
