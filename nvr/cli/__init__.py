"""Layer 6: the ``nvr`` command line, the process entry point above the wiring.

``tree`` declares every command with its arguments and handler, ``main`` parses, sets up
logging (``logs``), loads the config into a ``context`` and runs the handler, and ``exits``
maps what stopped it to an exit code and one line. One module per command group:
``serve``, ``footage``, ``keys``, ``tokens``, ``custody``, ``retention``.
"""
