"""``python -m nvr.cli``: the same entry point as the ``nvr`` command."""

from nvr.cli.main import main

raise SystemExit(main())
