"""What a camera URL may make ffmpeg do: the one allow-list of inputs (an nvr admin is not root).

A camera URL is handed to ffmpeg, which can read files, run filter graphs that
write files or open sockets, and follow playlists to ``file:`` URLs. So every
camera input is checked here, and the recorder's ffmpeg runs with the
protocol allow-list of the URL's scheme (``-protocol_whitelist``), so nothing
a camera (or a playlist it serves, or a redirect) says can reach another
protocol:

* network schemes: each may use only the protocols it needs (below);
* ``lavfi:``, the synthetic test sources of the demo and the tests: one source
  from a fixed list, with options from a fixed list whose values are numbers,
  sizes or plain words. No filter chain (no ``,``/``;``/``[``), so no filter
  that reads a file (``movie``, ``drawtext=textfile``), writes one
  (``metadata=file``) or listens (``zmq``) can be named.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from nvr.base.errors import ConfigError
from nvr.base.redact import redact_url

# scheme -> the ffmpeg protocols its input may open (the scheme's own first).
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "rtsp": ("rtsp", "rtp", "srtp", "udp", "tcp"),
    "rtsps": ("rtsps", "rtsp", "rtp", "srtp", "udp", "tcp", "tls"),
    "http": ("http", "tcp"),
    "https": ("https", "http", "tcp", "tls"),
    "rtmp": ("rtmp", "tcp"),
    "rtmps": ("rtmps", "rtmp", "tcp", "tls"),
    "srt": ("srt", "udp"),
    "udp": ("udp",),
    "tcp": ("tcp",),
}
NETWORK_SCHEMES = frozenset(PROTOCOLS)

# Synthetic sources that generate frames from their options alone.
LAVFI_SOURCES = frozenset({
    "testsrc", "testsrc2", "smptebars", "smptehdbars", "rgbtestsrc", "yuvtestsrc", "pal75bars", "pal100bars",
    "colorspectrum", "color", "allrgb", "allyuv",
})
LAVFI_OPTIONS = frozenset({"size", "s", "rate", "r", "duration", "d", "sar", "decimals", "color", "c", "type"})
_VALUE = re.compile(r"[0-9A-Za-z.+-]{1,32}(/[0-9]{1,9})?")  # 640x360, 15, 30000/1001, red, 0xff0000
_NAME = re.compile(r"[a-z0-9]{1,32}")


class SourceError(ValueError):
    """A camera input outside the allow-list; the message says what is allowed."""


def scheme_of(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def protocol_whitelist(url: str) -> str | None:
    """The ``-protocol_whitelist`` value for a network camera URL (None for ``lavfi:``)."""
    protocols = PROTOCOLS.get(scheme_of(url))
    return ",".join(protocols) if protocols else None


def check_lavfi(graph: str) -> None:
    """Accept ``source[=opt=value[:opt=value]...]`` from the allow-list; raise SourceError otherwise."""
    example = "e.g. lavfi:testsrc2=size=640x360:rate=15"
    name, _, opts = graph.partition("=")
    if not _NAME.fullmatch(name) or name not in LAVFI_SOURCES:
        raise SourceError(f"lavfi source {name[:40]!r} is not one of {', '.join(sorted(LAVFI_SOURCES))} ({example})")
    if not opts:
        return
    for part in opts.split(":"):
        key, eq, value = part.partition("=")
        if not eq or key not in LAVFI_OPTIONS:
            raise SourceError(f"lavfi option {key[:40]!r} is not one of {', '.join(sorted(LAVFI_OPTIONS))} "
                              f"written as name=value ({example})")
        if not _VALUE.fullmatch(value):
            raise SourceError(f"lavfi option {key}: {value[:40]!r} is not a number, size or word ({example})")


# Schemes ffmpeg reads from a camera; "lavfi" is the synthetic demo/test source.
LOCAL_SCHEMES = {"lavfi"}


def validate_camera_url(url: str, key: str, source: str | None = None) -> None:
    """Refuse URLs ffmpeg can't open as a camera; the message never echoes credentials."""
    shown = redact_url(url)
    if not url or any(c.isspace() for c in url):
        raise ConfigError(key, f"{shown!r} is not a URL (empty or contains spaces)", source=source)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(key, f"{shown!r} is malformed: {e}", source=source) from None
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES:
        if not url.split(":", 1)[1]:
            raise ConfigError(key, "lavfi: needs a source, e.g. lavfi:testsrc2=size=640x360:rate=15", source=source)
        try:
            check_lavfi(url.split(":", 1)[1])
        except SourceError as e:
            raise ConfigError(key, str(e), source=source) from None
        return
    if scheme not in NETWORK_SCHEMES:
        allowed = ", ".join(sorted(NETWORK_SCHEMES | LOCAL_SCHEMES))
        raise ConfigError(key, f"{shown!r}: scheme {scheme or '(none)'!r} is not one of {allowed}", source=source)
    if not parts.hostname:
        raise ConfigError(key, f"{shown!r} has no host", source=source)
    if port == 0:
        raise ConfigError(key, f"{shown!r} has port 0", source=source)
