"""Signed ledger checkpoints: the node's Ed25519 key attests each camera's chain head.

* ``document``: the signed body, its document form, and the checks a found document must pass;
* ``keys``: key trust (only the local keyring's keys), fingerprints, PEM loading;
* ``store``: bucket keys under ``ledger/``, journals, reading and writing checkpoints in the
  bucket and in the index's ``checkpoints`` table;
* ``writer``: :class:`CheckpointWriter`, the service that signs heads as they move.
"""

from nvr.custody.checkpoint.document import (
    ALGORITHM,
    CHECK_FORMAT,
    CHECK_MISMATCH,
    CHECK_ROLLBACK,
    CHECK_SIGNATURE,
    CHECK_UNKNOWN_KEY,
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    checkpoint_body,
    checkpoint_from_json,
    parse_checkpoint,
    sign_checkpoint,
)
from nvr.custody.checkpoint.keys import (
    fingerprint,
    load_public_pem,
    normalize_fingerprint,
    trusted_keys,
)
from nvr.custody.checkpoint.store import (
    KEYS_PREFIX,
    checkpoint_row,
    get_bytes,
    indexed_checkpoints,
    journal_bytes,
    key_object_key,
    latest_indexed_checkpoint,
    list_checkpoint_seqs,
    parse_journal,
    publish_keys,
    put_bytes,
    put_checkpoint,
    record_checkpoint,
)
from nvr.custody.checkpoint.writer import DEFAULT_INTERVAL, CheckpointRefused, CheckpointWriter
from storage.keyring import public_pem
from storage.ledger import (
    CHECKPOINT_KEY_RE,
    JOURNAL_KEY_RE,
    LEDGER_PREFIX,
    checkpoint_key,
    journal_key,
)

__all__ = [
    "ALGORITHM", "CHECKPOINT_KEY_RE", "CHECKPOINT_VERSION", "CHECK_FORMAT", "CHECK_MISMATCH",
    "CHECK_ROLLBACK", "CHECK_SIGNATURE", "CHECK_UNKNOWN_KEY", "DEFAULT_INTERVAL", "JOURNAL_KEY_RE", "KEYS_PREFIX",
    "LEDGER_PREFIX", "Checkpoint", "CheckpointError", "CheckpointRefused", "CheckpointWriter", "checkpoint_body",
    "checkpoint_from_json", "checkpoint_key", "fingerprint", "get_bytes", "checkpoint_row", "indexed_checkpoints",
    "journal_bytes", "journal_key", "key_object_key", "latest_indexed_checkpoint",
    "list_checkpoint_seqs", "load_public_pem", "normalize_fingerprint", "parse_checkpoint", "parse_journal",
    "public_pem", "publish_keys", "put_bytes", "put_checkpoint", "record_checkpoint", "sign_checkpoint",
    "trusted_keys",
]
