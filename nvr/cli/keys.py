"""``nvr keys list|rotate-kek|rotate-signing``: the keyring of a data dir."""

from __future__ import annotations

import argparse

from nvr.cli.context import Context
from nvr.cli.exits import OK
from nvr.custody.checkpoint import fingerprint, trusted_keys
from storage.keyring import Keyring

ACTIONS = ("list", "rotate-kek", "rotate-signing")


async def keys(args: argparse.Namespace, ctx: Context) -> int:
    """List the key ids, or rotate one key and print the new id (a rotation creates a missing keyring)."""
    ring = Keyring.open(ctx.config.keyring_dir, create=args.action != "list")
    if args.action == "rotate-kek":
        print(ring.rotate_kek())
    elif args.action == "rotate-signing":
        print(ring.rotate_signing_key())
    else:
        for kid in ring.kek_ids:
            print(f"kek     {kid}{'  (current)' if kid == ring.current_kek_id else ''}")
        for kid, pub in trusted_keys(ring).items():
            print(f"signing {kid} {fingerprint(pub)}{'  (current)' if kid == ring.signing_key.key_id else ''}")
    return OK
