"""The console's files (served by nvr itself; no CDN, no bundler): plain JavaScript modules and pages."""

from pathlib import Path

STATIC = Path(__file__).parent / "static"
