"""Benchmarks of the nvr server: on demand, never part of the test suite.

Run ``python -m bench <name> [--quick|--full]`` (``python -m bench list`` shows
the names) or ``python -m bench all --quick``. Each measurement prints one table
row and writes ``bench/results/<name>.json``. Every headline figure is a ratio
of two things measured in the same run on the same machine; absolute numbers
are reported beside it, never asserted. See docs/benchmarks.md.
"""
