"""The command line's logging: one stderr handler, with URL credentials redacted from every record."""

from __future__ import annotations

import logging
import sys

from nvr.base.redact import redact_text


class RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with URL credentials in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str) -> None:
    """Send every logger's records at ``level`` and above to stderr, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDKs log every retry at WARNING; our own lines already say what matters.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
