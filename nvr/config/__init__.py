"""Layer 1: the configuration, TOML in, frozen dataclasses out (see docs/architecture.md)."""
