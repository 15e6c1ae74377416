"""The one mapping from an error's kind to an exit code and the line ``nvr`` prints."""

from __future__ import annotations

import pytest

from nvr.base.errors import ConfigError, Conflict, InvalidInput, Kind, NotFound, NvrError
from nvr.cli import exits
from storage.errors import IntegrityError, KeyringError, StorageError, TransientStorageError

EXPECTED = {
    Kind.INVALID: (2, "nvr: config error: boom"),
    Kind.NOT_FOUND: (1, "nvr: boom"),
    Kind.CONFLICT: (1, "nvr: boom"),
    Kind.FORBIDDEN: (1, "nvr: boom"),
    Kind.LIMITED: (1, "nvr: boom"),
    Kind.UNAVAILABLE: (1, "nvr: boom"),
    Kind.REFUSED: (1, "nvr: boom"),
    Kind.DATA_LOSS: (3, "nvr: VERIFICATION FAILED: boom"),
    Kind.MISCONFIGURED: (1, "nvr: key error: boom"),
    Kind.INTERNAL: (1, "nvr: internal error: boom"),
}


def test_every_kind_has_an_outcome():
    assert set(exits.BY_KIND) == set(Kind) == set(EXPECTED)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_maps_to_its_code_and_line(kind):
    assert exits.for_error(NvrError("boom", kind=kind)) == EXPECTED[kind]


@pytest.mark.parametrize(("error", "code", "line"), [
    (ConfigError("server.what", "unknown key", source="nvr.toml"), 2, "nvr: config error: nvr.toml: server.what: unknown key"),
    (ConfigError("--rules", "x.json does not exist"), 2, "nvr: config error: --rules: x.json does not exist"),
    (InvalidInput("bad", field="f"), 2, "nvr: config error: bad"),
    (NotFound("no index at /d/index.sqlite3 (nothing recorded)"), 1, "nvr: no index at /d/index.sqlite3 (nothing recorded)"),
    (Conflict("another nvr process holds /d/retention.lock"), 1, "nvr: another nvr process holds /d/retention.lock"),
    (KeyringError("no key-encryption key in /k"), 1, "nvr: key error: no key-encryption key in /k"),
    (StorageError("S3 e: AccessDenied: no"), 1, "nvr: S3 e: AccessDenied: no"),
    (TransientStorageError("S3 e unreachable"), 1, "nvr: S3 e unreachable"),
    (IntegrityError("cam:3: object hash", segment="cam:3", check="object_sha256"), 3,
     "nvr: VERIFICATION FAILED (object_sha256): cam:3: object hash"),
    (IntegrityError("cam:3: broken"), 3, "nvr: VERIFICATION FAILED: cam:3: broken"),
    (PermissionError(13, "Permission denied"), 1, "nvr: PermissionError: [Errno 13] Permission denied"),
])
def test_the_errors_commands_raise(error, code, line):
    assert exits.for_error(error) == (code, line)


def test_the_codes():
    assert (exits.OK, exits.FAILURE, exits.USAGE, exits.INTEGRITY, exits.INTERRUPTED) == (0, 1, 2, 3, 130)
    assert {o.code for o in exits.BY_KIND.values()} <= set(exits.MEANINGS)
    text = exits.epilog()
    assert all(f"{code} {meaning}" in text for code, meaning in exits.MEANINGS.items())
