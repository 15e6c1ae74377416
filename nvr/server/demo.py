"""The credentials ``nvr serve --demo`` makes at every start: a bearer token and a console login, both admin."""

from __future__ import annotations

import secrets

from nvr.api.auth import create_token
from nvr.api.people import hash_password

DEMO_TOKEN = "demo-admin"
DEMO_USER = "demo"


def demo_token(index) -> str:
    """A new ``demo-admin`` token (the last start's revoked), shown once."""
    index.revoke_token(DEMO_TOKEN)
    return create_token(index, name=DEMO_TOKEN, role="admin", cameras=None)


def demo_user(index) -> str:
    """The demo's console login (an admin of every camera), with a new password at every start."""
    password = secrets.token_urlsafe(12)
    digest = hash_password(password)
    if index.people.user(DEMO_USER) is None:
        index.people.add_user(name=DEMO_USER, role="admin", cameras=None, password_hash=digest)
    else:
        index.people.update_user(DEMO_USER, role="admin", cameras=None, password_hash=digest, disabled=False)
    return password
