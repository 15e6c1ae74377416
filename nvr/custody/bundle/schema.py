"""The manifest's schema: the JSON type of every field the writer puts in manifest.json, checked before use.

:func:`parse_manifest` turns manifest.json's bytes into a dict that has every
field of :data:`MANIFEST_SCHEMA` with its type, or raises :class:`ManifestError`
naming the first field that is wrong (``segments[3].seq: must be an integer,
got a string``), so the checker never meets a value it did not expect. Also
refused: duplicate keys (two readers could see two manifests), ``NaN`` and
``Infinity``, nesting deeper than :data:`MAX_DEPTH`, and strings that are not
valid Unicode (a lone surrogate has no canonical JSON, so no record hash).
Keys the schema does not name are allowed; ledger records and checkpoint
documents need only the fields the chain checks read (their hashes and
signatures cover the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvr.base import strictjson
from nvr.custody.bundle.layout import BUNDLE_FORMAT
from storage.ledger import canonical_json

MAX_DEPTH = 32


@dataclass(frozen=True)
class Nullable:
    """The value may also be null."""

    of: Any


@dataclass(frozen=True)
class MapOf:
    """An object of any keys whose every value is ``of``."""

    of: Any


@dataclass(frozen=True)
class Either:
    """One of ``options`` (the problem of the first is reported when none fits)."""

    options: tuple[Any, ...]


NULL = None  # a spec: the value must be null
# Specs: str, bool, int (a non-negative integer), float (any finite number), NULL, Nullable, MapOf,
# Either, a dict (an object with at least these keys), a one-element list (an array of that).
RECORD = {"type": str, "camera": str, "seq": int, "prev": str}
SEGMENT = {
    "id": str, "camera": str, "seq": int, "start": str, "end": str, "duration": float, "partial": bool,
    "size": int, "sha256": str, "file": str, "record_hash": str, "object_sha256": str, "key_id": str,
    "checkpoint": Nullable(int),
}
EXCLUDED = {"id": str, "status": str, "check": Nullable(str), "detail": Nullable(str), "rule": Nullable(str),
            "deleted_at": Nullable(str)}
GAP = {"camera": str, "start": str, "end": str, "seconds": float}
CLIP = Either((
    {"camera": str, "file": str, "size": int, "sha256": str, "segments": [str], "gaps": int},
    {"camera": str, "file": NULL, "error": str},
))
MANIFEST_SCHEMA = {
    "format": str, "export_id": str, "case_id": str, "reason": str, "exported_by": str, "exported_by_role": str,
    "exported_at": str, "node": str, "software": {"name": str, "version": str},
    "range": {"start": str, "end": str}, "cameras": [str],
    "signing_key": {"key_id": str, "algorithm": str, "fingerprint_sha256": str, "file": str},
    "segments": [SEGMENT], "excluded": [EXCLUDED], "gaps": [GAP], "clips": [CLIP],
    "ledger": MapOf({"records": [RECORD], "checkpoints": [{}]}),
    "keys": MapOf(str),
    # What verification found at export time: informative, so only its shape.
    "verification": {"verdict": str, "checked_at": str, "counts": MapOf(int), "problems": [{}]},
}


class ManifestError(ValueError):
    """manifest.json is not a manifest of this format; the message names the first wrong field."""


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
          dict: "an object", type(None): "null"}


def _what(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def problem(value: Any, spec: Any, path: str = "") -> str | None:
    """What is wrong with ``value`` as ``spec`` (the first thing found), or None."""
    where = path or "the manifest"
    if spec is NULL:
        return None if value is None else f"{where}: must be null, got {_what(value)}"
    if isinstance(spec, Nullable):
        return None if value is None else problem(value, spec.of, path)
    if isinstance(spec, Either):
        first = None
        for option in spec.options:
            found = problem(value, option, path)
            if found is None:
                return None
            first = first or found
        return first
    if spec is bool:
        return None if isinstance(value, bool) else f"{where}: must be a boolean, got {_what(value)}"
    if spec is str:
        return None if isinstance(value, str) else f"{where}: must be a string, got {_what(value)}"
    if spec is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{where}: must be an integer, got {_what(value)}"
        return None if value >= 0 else f"{where}: must not be negative, got {value}"
    if spec is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{where}: must be a number, got {_what(value)}"
        return None if value == value and abs(value) != float("inf") else f"{where}: must be finite"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where}: must be an array, got {_what(value)}"
        for i, item in enumerate(value):
            if (found := problem(item, spec[0], _at(path, i))) is not None:
                return found
        return None
    if not isinstance(value, dict):
        return f"{where}: must be an object, got {_what(value)}"
    if isinstance(spec, MapOf):
        for key, item in value.items():
            if (found := problem(item, spec.of, _at(path, key))) is not None:
                return found
        return None
    for key, item_spec in spec.items():
        if key not in value:
            return f"{_at(path, key)}: is missing"
        if (found := problem(value[key], item_spec, _at(path, key))) is not None:
            return found
    return None


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def parse_manifest(data: bytes) -> dict[str, Any]:
    """manifest.json's bytes as a manifest that has every field of :data:`MANIFEST_SCHEMA`; else :class:`ManifestError`."""
    try:
        manifest = strictjson.loads(data.decode("utf-8"))
    except strictjson.JsonRefused as e:
        raise ManifestError(str(e)) from None
    except RecursionError:
        raise ManifestError(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8: {e}") from None
    except ValueError as e:  # json.JSONDecodeError, and an integer of more digits than Python converts
        raise ManifestError(f"not JSON: {e}") from None
    if _depth(manifest) > MAX_DEPTH:
        raise ManifestError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        canonical_json(manifest)
    except UnicodeEncodeError as e:
        raise ManifestError(f"a string is not valid Unicode: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ManifestError(f"format is not {BUNDLE_FORMAT}")
    if (found := problem(manifest, MANIFEST_SCHEMA)) is not None:
        raise ManifestError(found)
    return manifest
