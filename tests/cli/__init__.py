"""Tests of the command line: its tree, its exit codes, and commands that need no S3."""
