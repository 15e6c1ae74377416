"""The index layer owns every SQL statement: none in any other product module, no driver imported elsewhere.

Read from the source with ``ast``: each string literal (f-strings included) that
reads like a statement, and each import of a database driver, outside
``storage/index/`` fails here with its file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nvr", "storage", "retention")
OWNER = ROOT / "storage" / "index"
DRIVERS = {"sqlite3", "psycopg", "psycopg_pool", "psycopg2", "apsw"}
STATEMENT = re.compile(
    r"^\s*(SELECT\s.+\sFROM\s|INSERT\s+(OR\s+\w+\s+)?INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|"
    r"(CREATE|DROP|ALTER)\s+(TABLE|INDEX|TRIGGER|VIEW)\s|PRAGMA\s|BEGIN(\s+(IMMEDIATE|EXCLUSIVE|DEFERRED))?\s*$|"
    r"VACUUM\b|WITH\s+\w+\s+AS\s*\()", re.S)


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, text


def _offences() -> list[str]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if OWNER in path.parents:
                continue
            rel = path.relative_to(ROOT)
            tree = ast.parse(path.read_text(), str(path))
            for line, text in _strings(tree):
                if STATEMENT.search(text):
                    found.append(f"{rel}:{line}: SQL outside storage/index: {text.strip()[:60]!r}")
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    if name.split(".")[0] in DRIVERS:
                        found.append(f"{rel}:{node.lineno}: imports the database driver {name}")
    return found


def test_no_sql_outside_the_index_layer():
    assert _offences() == []


def test_the_check_sees_a_statement(tmp_path, monkeypatch):
    # The pattern must catch what the index's own modules write, or the test above proves nothing.
    samples = [
        "SELECT seq, hash FROM ledger WHERE camera = ?",
        "INSERT INTO segments (id) VALUES (?)",
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        "UPDATE segments SET state = 'deleted' WHERE id = ?",
        "DELETE FROM retention_pending WHERE segment_id = ?",
        "CREATE TABLE IF NOT EXISTS exports (id TEXT)",
        "PRAGMA table_info(exports)",
        "BEGIN IMMEDIATE",
        "VACUUM INTO ?",
    ]
    assert all(STATEMENT.search(s) for s in samples)
    prose = ["Select the rules from the config file", "update the segment state", "the index is unavailable"]
    assert not any(STATEMENT.search(s) for s in prose)
    in_owner = sum(1 for p in OWNER.rglob("*.py") for _, t in _strings(ast.parse(p.read_text()))
                   if STATEMENT.search(t))
    assert in_owner > 50  # every statement of the product, found where it belongs
