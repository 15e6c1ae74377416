"""Malformed manifests, signed by a trusted key, are failed reports: never an exception, never a traceback.

Hypothesis mutates a complete manifest: a field's value replaced by a value of
another JSON type, a key removed, a value nested one level deeper. Each is
signed again with the bundle's own (trusted) key, so only the manifest's
content can fail it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvr.cli.main import run as run_cli
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import fingerprint
from tests.custody.bundles import make_bundle, manifest_of, resign, unpack

# Fields the format allows to be null (layout.py): substituting null there is no malformation.
NULLABLE = re.compile(r"^(segments\[\d+\]\.checkpoint|excluded\[\d+\]\.(check|detail|rule|deleted_at))$")
# Maps whose keys are free (a status count may be absent): removing one of their keys is no malformation.
FREE_KEYS = re.compile(r"^verification\.counts\.[^.]+$")

Path_ = tuple[str | int, ...]


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """An unpacked genuine bundle, its manifest, and the key that signs it (the one trusted)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    out, key = make_bundle(tmp, signed_up_to=1)
    top = unpack(out, tmp / "unpacked")
    assert verify_bundle(top, trusted={"k": key.public}).ok
    return top, manifest_of(top), key


def _paths(value: Any, at: Path_ = ()) -> list[Path_]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


def _shown(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _category(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def _replace(doc: Any, path: Path_, fn) -> Any:
    """``doc`` with the value at ``path`` replaced by ``fn(value)`` (``fn`` returning ``_DELETE`` removes it)."""
    if not path:
        return fn(doc)
    head, rest = path[0], path[1:]
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    new = _replace(doc[head], rest, fn)
    if new is _DELETE:
        del copy[head]
    else:
        copy[head] = new
    return copy


_DELETE = object()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutations(draw, manifest: dict[str, Any]) -> tuple[str, Any]:
    """A description and the mutated manifest (any JSON value: the root itself may be replaced)."""
    path = draw(st.sampled_from(_paths(manifest)))
    kind = draw(st.sampled_from(["retype", "delete", "nest"]))
    shown = _shown(path)
    if kind == "delete" and path and isinstance(_parent(manifest, path), dict) and not FREE_KEYS.match(shown):
        return f"delete {shown}", _replace(manifest, path, lambda v: _DELETE)
    if kind == "nest":
        wrap = draw(st.sampled_from(["array", "object"]))
        return f"nest {shown} in an {wrap}", _replace(manifest, path, lambda v: [v] if wrap == "array" else {"x": v})
    value = _parent(manifest, path)[path[-1]] if path else manifest
    avoid = {_category(value)} | ({"null"} if NULLABLE.match(shown) else set())
    new = draw(json_values.filter(lambda v: _category(v) not in avoid))
    return f"retype {shown} to {json.dumps(new)[:60]}", _replace(manifest, path, lambda v: new)


def _parent(doc: Any, path: Path_) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_malformed_manifest_is_a_failed_report(signed, data):
    top, manifest, key = signed
    what, mutated = data.draw(mutations(manifest))
    resign(top, key, raw=(json.dumps(mutated, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
    try:
        report = verify_bundle(top, trusted={"k": key.public})
    finally:
        resign(top, key, manifest)
    assert not report.ok, what
    assert report.verdict == "failed" and not report.untrusted, what
    assert [c.name for c in report.checks if c.name == "trusted key" and c.ok], what


# The crafted manifests of the review, written as raw bytes and signed by the trusted key.
def _with(manifest: dict[str, Any], edit) -> bytes:
    m = json.loads(json.dumps(manifest))
    edit(m)
    return (json.dumps(m, indent=2) + "\n").encode()


CRAFTED = {
    "seq is a string": lambda m: _with(m, lambda d: d["segments"][0].update(seq="0")),
    "seq is null": lambda m: _with(m, lambda d: d["segments"][0].update(seq=None)),
    "seq is a list": lambda m: _with(m, lambda d: d["segments"][0].update(seq=[0])),
    "a record is not an object": lambda m: _with(m, lambda d: d["ledger"]["cam"]["records"].__setitem__(0, 7)),
    "records is an object": lambda m: _with(m, lambda d: d["ledger"]["cam"].update(records={})),
    "a key is not a string": lambda m: _with(m, lambda d: d["keys"].update({"k": ["pem"]})),
    "a checkpoint body is a string": lambda m: _with(
        m, lambda d: d["ledger"]["cam"]["checkpoints"][0].update(body="x")),
    "a checkpoint seq is true": lambda m: _with(
        m, lambda d: d["ledger"]["cam"]["checkpoints"][0]["body"].update(seq=True)),
    "a record seq is a boolean": lambda m: _with(m, lambda d: d["ledger"]["cam"]["records"][1].update(seq=True)),
    "segments is missing": lambda m: _with(m, lambda d: d.pop("segments")),
    "the manifest is a list": lambda m: b"[1, 2]\n",
    "not JSON": lambda m: b"{\"format\": \n",
    "nested 100000 deep": lambda m: b"[" * 100_000 + b"]" * 100_000,
    "nested 40 deep": lambda m: _with(m, lambda d: d.update(extra=json.loads("[" * 40 + "]" * 40))),
    "NaN": lambda m: _with(m, lambda d: None).replace(b'"duration": 2.0', b'"duration": NaN', 1),
    "duplicate keys": lambda m: _with(m, lambda d: None).replace(b'"case_id": "C-1"', b'"case_id": "X", "case_id": "C-1"', 1),
    "a lone surrogate": lambda m: _with(m, lambda d: d.update(case_id="\ud800")),
    "an integer of 5000 digits": lambda m: _with(m, lambda d: None).replace(b'"seq": 0', b'"seq": ' + b"9" * 5000, 1),
    "not UTF-8": lambda m: _with(m, lambda d: None).replace(b'"C-1"', b'"C-\xff"', 1),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_manifests_fail_in_verify_bundle_and_the_cli_without_a_traceback(signed, case, capsys,
                                                                                  monkeypatch):
    monkeypatch.delenv("NVR_CONFIG", raising=False)
    top, manifest, key = signed
    raw = CRAFTED[case](manifest)
    assert raw != (top / "manifest.json").read_bytes()
    resign(top, key, raw=raw)
    try:
        report = verify_bundle(top, trusted={"k": key.public})
        assert report.verdict == "failed", case
        code = run_cli(["verify-bundle", str(top), "--key", str(_pem(top)), "--data-dir", str(top.parent / "d")])
        captured = capsys.readouterr()
    finally:
        resign(top, key, manifest)
    assert code == 1, captured.out
    assert "Traceback" not in captured.out + captured.err
    assert captured.out.rstrip().endswith("BUNDLE VERIFICATION FAILED")
    assert fingerprint(key.public) in captured.out


def _pem(top: Path) -> Path:
    pem = top.parent / "trusted.pem"
    pem.write_bytes((top / "public.pem").read_bytes())
    return pem


SAMPLES = {"null": None, "bool": True, "number": 7, "string": "s", "array": [], "object": {}}


def test_every_field_retyped_removed_or_nested_fails(signed):
    """The same three mutations at every path of the manifest, with one value of each other type."""
    top, manifest, key = signed
    survived = []
    try:
        for path in _paths(manifest):
            shown = _shown(path)
            value = _parent(manifest, path)[path[-1]] if path else manifest
            variants = [(f"retype {shown} to {c}", _replace(manifest, path, lambda v, s=s: s))
                        for c, s in SAMPLES.items()
                        if c != _category(value) and not (c == "null" and NULLABLE.match(shown))]
            variants.append((f"nest {shown}", _replace(manifest, path, lambda v: [v])))
            if path and isinstance(_parent(manifest, path), dict) and not FREE_KEYS.match(shown):
                variants.append((f"delete {shown}", _replace(manifest, path, lambda v: _DELETE)))
            for what, mutated in variants:
                resign(top, key, raw=(json.dumps(mutated, indent=2, sort_keys=True) + "\n").encode())
                report = verify_bundle(top, trusted={"k": key.public})
                if report.verdict != "failed":
                    survived.append(what)
    finally:
        resign(top, key, manifest)
    assert not survived
