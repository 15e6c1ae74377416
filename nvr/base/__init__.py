"""Layer 1: what every layer uses (errors with kinds, ids, units, times, redaction, the gap rule)."""
