"""The retention rule model: resolution, validation naming the field, the JSON/TOML form, the floor."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvr.config.retention import (
    ResolvedRule,
    RetentionRuleError,
    Rule,
    RuleSet,
    parse_rules,
    rules_from_dict,
    rules_to_dict,
    validate_rules,
    with_floor,
)


def test_resolution():
    rules = RuleSet(Rule(max_age=30 * 86400, min_age=48 * 3600), {"gate": Rule(max_bytes=100)})
    assert rules.for_camera("gate") == ResolvedRule(max_age=30 * 86400, max_bytes=100, min_age=48 * 3600)
    assert rules.for_camera("other") == ResolvedRule(max_age=30 * 86400, max_bytes=None, min_age=48 * 3600)
    assert RuleSet().for_camera("x") == ResolvedRule(None, None, 86400.0)


def test_ruleset_hashes_by_content():
    assert hash(RuleSet(cameras={"a": Rule(min_age=60)})) == hash(RuleSet(cameras={"a": Rule(min_age=60)}))


# ----------------------------------------------------------------- JSON / TOML form

durations = st.integers(60, 10**8) | st.floats(60, 10**8, allow_nan=False, allow_infinity=False)
sizes = st.integers(1, 2**50)


@st.composite
def rulesets(draw) -> RuleSet:
    def rule(min_floor: float) -> Rule:
        min_age = draw(st.none() | durations)
        floor = max(min_floor, min_age or 0)
        max_age = draw(st.none() | durations.map(lambda x: x + floor))
        return Rule(max_age, draw(st.none() | sizes), min_age)

    default = rule(86400)  # an unset default min_age resolves to 24 h
    floor = default.min_age or 86400
    cams = {c: rule(floor) for c in draw(st.sets(st.sampled_from(("gate", "yard-1", "door_2"))))}
    hi, lo = draw(st.sampled_from(((0.9, 0.8), (1.0, 0.25), (0.75, 0.5))))
    return RuleSet(default, cams, draw(st.none() | sizes), hi, lo)


def _valid(rules: RuleSet) -> bool:
    try:
        validate_rules(rules)
    except RetentionRuleError:
        return False  # e.g. an override's min_age above the max_age it inherits
    return True


@settings(max_examples=200, deadline=None)
@given(rulesets().filter(_valid))
def test_rules_dict_round_trip(rules):
    validate_rules(rules)
    d = rules_to_dict(rules)
    assert rules_from_dict(json.loads(json.dumps(d))) == rules
    for r in [d["default"], *d["cameras"].values()]:
        assert all(isinstance(v, str) for v in r.values())  # units are explicit


def test_rules_from_dict_example():
    r = rules_from_dict({
        "default": {"max_age": "30d", "max_bytes": "500GiB", "min_age": "24h"},
        "cameras": {"gate": {"max_age": "7d"}, "yard": {"min_age": "1m", "max_age": "1m"}},
        "quota_bytes": "2TiB", "high_watermark": 0.95, "low_watermark": 0.85,
    })
    assert r == RuleSet(Rule(30 * 86400, 500 * 2**30, 86400),
                        {"gate": Rule(max_age=7 * 86400), "yard": Rule(60, None, 60)}, 2 * 2**40, 0.95, 0.85)
    assert rules_to_dict(r) == {
        "default": {"max_age": "30d", "max_bytes": "500GiB", "min_age": "1d"},
        "cameras": {"gate": {"max_age": "1w"}, "yard": {"max_age": "1m", "min_age": "1m"}},
        "quota_bytes": "2TiB", "high_watermark": 0.95, "low_watermark": 0.85,
    }
    assert rules_from_dict({}) == RuleSet()


# ----------------------------------------------------------------- validation

RULESET_ERRORS = [
    (RuleSet(Rule(max_age=-1)), "default.max_age"),
    (RuleSet(Rule(min_age=-5)), "default.min_age"),
    (RuleSet(cameras={"gate": Rule(max_bytes=-1)}), "cameras.gate.max_bytes"),
    (RuleSet(Rule(max_age=0)), "default.max_age"),
    (RuleSet(Rule(max_age=3600, min_age=7200)), "default.max_age"),
    (RuleSet(Rule(max_age=3600)), "default.max_age"),  # below the 24 h default min_age
    (RuleSet(Rule(max_age=86400), {"gate": Rule(min_age=2 * 86400)}), "cameras.gate.min_age"),
    (RuleSet(Rule(min_age=3600), {"gate": Rule(max_age=60)}), "cameras.gate.max_age"),
    (RuleSet(Rule(min_age=30)), "default.min_age"),
    (RuleSet(Rule(min_age=float("nan"))), "default.min_age"),
    (RuleSet(Rule(max_age=True)), "default.max_age"),
    (RuleSet(Rule(max_bytes=0)), "default.max_bytes"),
    (RuleSet(Rule(max_bytes=1.5)), "default.max_bytes"),
    (RuleSet(quota_bytes=0), "quota_bytes"),
    (RuleSet(quota_bytes=-1), "quota_bytes"),
    (RuleSet(high_watermark=0.8, low_watermark=0.9), "low_watermark"),
    (RuleSet(high_watermark=0.9, low_watermark=0.9), "low_watermark"),
    (RuleSet(high_watermark=1.1), "high_watermark"),
    (RuleSet(high_watermark=0), "high_watermark"),
    (RuleSet(low_watermark=0), "low_watermark"),
    (RuleSet(cameras={"Gate!": Rule()}), "cameras.Gate!"),
]


@pytest.mark.parametrize(("rules", "fieldname"), RULESET_ERRORS)
def test_validate_rules_names_the_field(rules, fieldname):
    with pytest.raises(RetentionRuleError) as e:
        validate_rules(rules)
    assert e.value.field == fieldname
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(f"{fieldname}: ")


def test_max_age_below_min_age_message_says_why():
    with pytest.raises(RetentionRuleError, match="below min_age.*delete everything"):
        validate_rules(RuleSet(Rule(max_age=3600, min_age=7200)))


@pytest.mark.parametrize("rules", [
    RuleSet(Rule(max_age=60, min_age=60)),  # a one-minute max_age is allowed with a one-minute min_age
    RuleSet(Rule(max_age=86400)),
    RuleSet(high_watermark=1.0, low_watermark=0.01, quota_bytes=1),
    RuleSet(Rule(max_age=7200, min_age=60), {"gate": Rule(max_age=3600)}),
])
def test_valid_rules(rules):
    validate_rules(rules)


DICT_ERRORS = [
    ({"default": {"max_age": "5 parsecs"}}, "default.max_age"),
    ({"default": {"max_age": "10"}}, "default.max_age"),
    ({"default": {"max_age": 10}}, "default.max_age"),
    ({"default": {"min_age": "-5s"}}, "default.min_age"),
    ({"default": {"max_age": "0s"}}, "default.max_age"),
    ({"default": {"max_age": "1h", "min_age": "2h"}}, "default.max_age"),
    ({"default": {"max_bytes": 500}}, "default.max_bytes"),
    ({"default": {"max_bytes": "0GiB"}}, "default.max_bytes"),
    ({"default": {"max_bytes": "20gib"}}, "default.max_bytes"),
    ({"default": {"max_age": None}}, "default.max_age"),
    ({"default": {"maxage": "1d"}}, "default.maxage"),
    ({"default": "30d"}, "default"),
    ({"cameras": {"gate": {"max_bytes": "-1GiB"}}}, "cameras.gate.max_bytes"),
    ({"cameras": {"gate": {"colour": "red"}}}, "cameras.gate.colour"),
    ({"cameras": {"gate": {"min_age": "3d"}}, "default": {"max_age": "2d"}}, "cameras.gate.min_age"),
    ({"cameras": {"Gate!": {}}}, "cameras.Gate!"),
    ({"cameras": ["gate"]}, "cameras"),
    ({"quota": "1TiB"}, "quota"),
    ({"quota_bytes": "0B"}, "quota_bytes"),
    ({"quota_bytes": 10**12}, "quota_bytes"),
    ({"high_watermark": "0.9"}, "high_watermark"),
    ({"high_watermark": True}, "high_watermark"),
    ({"high_watermark": 0.5}, "low_watermark"),
    ({"low_watermark": 0.95}, "low_watermark"),
]


@pytest.mark.parametrize(("data", "fieldname"), DICT_ERRORS)
def test_rules_from_dict_names_the_field(data, fieldname):
    with pytest.raises(RetentionRuleError) as e:
        rules_from_dict(data)
    assert e.value.field == fieldname


def test_bare_numbers_refused_because_units_are_explicit():
    with pytest.raises(RetentionRuleError, match="units are explicit"):
        rules_from_dict({"default": {"max_age": 86400}})
    with pytest.raises(RetentionRuleError, match="unknown key"):
        rules_from_dict({"defaults": {}})


# ----------------------------------------------------------------- the deployment's floor


def test_rule_floor_is_strict():
    with pytest.raises(RetentionRuleError) as err:
        parse_rules({"cameras": {"gate": {"min_age": "30m"}}}, 3600.0)
    assert err.value.field == "cameras.gate.min_age" and "below retention.min_age (1h)" in err.value.message
    assert parse_rules({"default": {"max_age": "1m"}}, 60.0).default == Rule(max_age=60.0, min_age=60.0)
    with pytest.raises(RetentionRuleError):
        with_floor(RuleSet(default=Rule(max_age=60.0)), 3600.0)  # max_age below the floor-filled min_age
