"""Layer 4: the ``nvr`` command line."""
