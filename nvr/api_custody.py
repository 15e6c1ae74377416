"""HTTP routes of the custody issue (filled in by that work); api.all_routes() serves them."""

from __future__ import annotations

ROUTES: tuple = ()
