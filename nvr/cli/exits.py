"""The exit codes of ``nvr`` and the one mapping from an error's kind to its code and printed line.

A command returns ``OK`` or ``FAILURE`` for an answer it reached (a failed
verification, a sweep with deletions left pending: its report says what);
everything that stops a command is an ``NvrError`` (or an ``OSError``) that
``main`` turns into a code and one ``nvr: ...`` line on stderr, here.
``verify`` and ``verify-bundle`` report tampering as ``FAILURE`` with the
report; ``INTEGRITY`` is for a command stopped by the data itself (``fetch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from nvr.base.errors import Kind, NvrError

OK = 0
FAILURE = 1      # the answer is no, or the command could not run (the line says which)
USAGE = 2        # bad arguments or config; argparse exits 2 on its own errors as well
INTEGRITY = 3    # stored bytes or records don't match the ledger
INTERRUPTED = 130  # SIGINT, the shell's 128 + 2

MEANINGS = MappingProxyType({
    OK: "ok",
    FAILURE: "failed or could not run",
    USAGE: "bad arguments or config",
    INTEGRITY: "stored data does not match the ledger",
    INTERRUPTED: "interrupted",
})


@dataclass(frozen=True)
class Outcome:
    """What ``main`` does with an error of one kind: the exit code, and the label before its message."""

    code: int
    label: str = ""  # empty where the message says it all ("no index at ...", "another nvr process holds ...")


BY_KIND = MappingProxyType({
    Kind.INVALID: Outcome(USAGE, "config error"),  # arguments are configuration of one run
    Kind.NOT_FOUND: Outcome(FAILURE),
    Kind.CONFLICT: Outcome(FAILURE),
    Kind.FORBIDDEN: Outcome(FAILURE),
    Kind.LIMITED: Outcome(FAILURE),
    Kind.UNAVAILABLE: Outcome(FAILURE),
    Kind.REFUSED: Outcome(FAILURE),
    Kind.DATA_LOSS: Outcome(INTEGRITY, "VERIFICATION FAILED"),
    Kind.MISCONFIGURED: Outcome(FAILURE, "key error"),  # the keyring is what an operator restores
    Kind.INTERNAL: Outcome(FAILURE, "internal error"),
})


def for_error(error: NvrError | OSError) -> tuple[int, str]:
    """The exit code and the stderr line for an error that stopped a command."""
    if not isinstance(error, NvrError):  # a file the command needed: the OS's own words say which
        return FAILURE, f"nvr: {type(error).__name__}: {error}"
    outcome = BY_KIND[error.kind]
    label = outcome.label
    if error.kind is Kind.DATA_LOSS and error.context.get("check"):
        label += f" ({error.context['check']})"
    return outcome.code, f"nvr: {label}: {error}" if label else f"nvr: {error}"


def epilog() -> str:
    """The exit codes, for the end of ``nvr --help``."""
    return "exit status: " + "; ".join(f"{code} {meaning}" for code, meaning in MEANINGS.items())
