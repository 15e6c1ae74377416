"""Recording, API and wiring of the nvr server."""

__version__ = "0.1.0"
