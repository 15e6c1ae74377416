"""Retention rules, holds and the sweep that deletes (rules arrive with the retention issue)."""
