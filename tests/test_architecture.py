"""The layers of docs/architecture.md, checked on the source: each imports only from the layers below it.

The check reads every module's imports with ``ast`` (function-level ones too:
an import hidden inside a function is still a dependency), so a new upward
import or a new cycle fails here, naming the module and the line.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nvr", "storage", "retention")

# Lowest first. A module may import from its own layer's package and from any layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("nvr.base",),
    ("nvr.config",),
    ("storage",),
    ("nvr.playback", "nvr.ingest", "nvr.recording", "retention", "nvr.custody", "nvr.cluster", "nvr.live"),
    ("nvr.console",),  # the console's files (no code the API imports but their directory)
    ("nvr.api",),
    ("nvr.server",),
    ("nvr.cli",),
)
# Stages share a layer but not their internals; these are the only uses of one stage by another.
STAGE_USES = {
    "nvr.custody": {"nvr.playback"},  # an export's stitched clip is the playback clip
    # A node's leases start and stop its recorders; it enrolls its checkpoint-signing keys.
    "nvr.cluster": {"nvr.recording", "nvr.custody"},
    # A live init segment is HLS's (the same codec-change rule); a substream opens its URL by the recorder's rules.
    "nvr.live": {"nvr.playback", "nvr.recording"},
}
# Package roots that hold no code of their own layer (only the version string).
NEUTRAL = {"nvr"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(mod: str, path: Path) -> list[tuple[str, int]]:
    """Absolute names of the project modules ``mod`` imports, with their line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from pkg import module` imports the module.
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        found += [(n, node.lineno) for n in names if n.split(".")[0] in PACKAGES]
    return found


def _unit(mod: str) -> tuple[int, str] | None:
    """(layer number, unit) of a module: the unit is the layer entry it belongs to."""
    for i, layer in enumerate(LAYERS):
        for unit in layer:
            if mod == unit or mod.startswith(unit + "."):
                return i, unit
    return None


def test_every_module_has_a_layer():
    stray = sorted(m for m in MODULES if m not in NEUTRAL and _unit(m) is None)
    assert not stray, f"modules outside every layer of docs/architecture.md: {stray}"


def test_each_layer_imports_only_from_below():
    wrong = []
    for mod, path in MODULES.items():
        here = _unit(mod)
        if here is None:
            continue
        for target, line in _imports(mod, path):
            if target in NEUTRAL:
                continue
            there = _unit(target)
            if there is None:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}, which is in no layer")
            elif there[0] > here[0]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} from a higher layer")
            elif there[0] == here[0] and there[1] != here[1] and there[1] not in STAGE_USES.get(here[1], ()):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}, another {here[1]} peer")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in MODULES.items():
        for target, _ in _imports(mod, path):
            while target not in MODULES and "." in target:  # `import a.b.name` of a non-module name
                target = target.rpartition(".")[0]
            if target in MODULES and target != mod:
                graph[mod].add(target)
    # A package's __init__ importing its own modules is how a package exports; not a cycle through callers.
    for mod in list(graph):
        graph[mod] = {t for t in graph[mod] if not (MODULES[mod].name == "__init__.py" and t.startswith(mod + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_long_modules_say_why():
    """A module over MAX_LINES says in its docstring's first paragraph why it is one module."""
    long = []
    for path in MODULES.values():
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "one module" not in doc.split("\n\n")[0]:
            long.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not long, f"split these, or say in the docstring why each is one module: {long}"
