"""The Prometheus text exposition format (no client library: the format is small)."""

from __future__ import annotations


def number(value: float) -> str:
    """Exact for counters (``%g`` would round 1169730 to 1.16973e+06)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """Lines of the Prometheus text format, one metric family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {number(value)}" if lab else f"{name} {number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
