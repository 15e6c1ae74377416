"""Layer 4: the HTTP API (aiohttp), one module per concern."""
