"""``nvr user``: people added, changed and listed from the command line; passwords from stdin, never shown."""

from __future__ import annotations

import io

from argon2 import PasswordHasher

from nvr.cli.main import run
from storage.index import Index


def _run(tmp_path, monkeypatch, capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = run([*argv, "--data-dir", str(tmp_path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_user_is_added_changed_and_listed_without_any_password_shown(tmp_path, monkeypatch, capsys):
    code, _, err = _run(tmp_path, monkeypatch, capsys, "user", "add", "officer-12", "--role", "viewer",
                        "--cameras", "gate-north", stdin="a long password\n")
    assert code == 0, err
    index = Index(tmp_path / "index.sqlite3")
    try:
        user = index.people.user("officer-12")
        assert user.role == "viewer" and user.cameras == ["gate-north"]
        assert PasswordHasher().verify(user.password_hash, "a long password")
        code, _, err = _run(tmp_path, monkeypatch, capsys, "user", "passwd", "officer-12", stdin="short\n")
        assert code != 0 and "password" in err
        code, _, _ = _run(tmp_path, monkeypatch, capsys, "user", "disable", "officer-12")
        assert code == 0 and index.people.user("officer-12").disabled_ms is not None
        code, out, _ = _run(tmp_path, monkeypatch, capsys, "user", "list")
        assert "officer-12" in out and "disabled" in out and "password" not in out and "$argon2" not in out
        actions = [e.action for e in index.audit_entries(target="officer-12")]
        assert actions == ["user.create", "user.update"]
    finally:
        index.close()
