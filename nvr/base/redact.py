"""Credential redaction for every string that may carry a camera URL: logs, status, API output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

# user:password@ or user@ right after a scheme, anywhere in a line (ffmpeg echoes input URLs).
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# Query parameters that cameras commonly use to carry secrets.
_SECRET_QUERY_RE = re.compile(r"(?i)\b(password|passwd|pwd|pass|token|auth|key|secret|user|username)=([^&\s]+)")

REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL with any user info and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_credentials(url: str) -> bool:
    """True when the URL carries a user, a password or a secret-looking query value, however short."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True  # can't tell: treat it as secret
    return bool(parts.username or parts.password or _SECRET_QUERY_RE.search(parts.query))


def url_secrets(url: str) -> list[str]:
    """The secret strings inside a URL (password and user, raw and percent-decoded)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    for value in (parts.password, parts.username):
        if value:
            found += [value, unquote(value)]
    for m in _SECRET_QUERY_RE.finditer(parts.query):
        found += [m.group(2), unquote(m.group(2))]
    # Longest first so a password that contains the user name is replaced whole.
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL user info, secret query values and the given secrets replaced."""
    text = _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
