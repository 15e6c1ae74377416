"""The object checks of one segment (blocking): fetch the object, compare hashes, decrypt.

``object_version``  the indexed version is gone and another object sits at the key
``record_metadata`` the record in the object's S3 metadata is not the ledger record
``object_sha256``   SHA-256 (or size) of the stored object differs
``header``/``unwrap``/``decrypt``  envelope checks (``decrypt``: GCM
                    authentication, which also fails for another camera's or
                    another time's object: the AAD binds camera, key and times)
``sha256``          SHA-256 (or size) of the decrypted segment differs
``kek``             the key-encryption key is not in the keyring
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from nvr.custody.verify.assess import ObjectCheck
from nvr.custody.verify.report import Finding
from storage.envelope import SegmentContext, decrypt
from storage.errors import IntegrityError, KeyringError
from storage.keyring import Keyring
from storage.ledger import canonical_json
from storage.objectstore import ObjectStore

PlaintextSink = Callable[[Mapping[str, Any], bytes], None]


def check_object(store: ObjectStore, keyring: Keyring, record: Mapping[str, Any], version_id: str | None,
                 sink: PlaintextSink | None = None) -> ObjectCheck:
    """Fetch one segment's object and run every object-level check (blocking: run it with ``store.run``).

    ``sink(record, plaintext)`` receives the decrypted bytes when every check passed.
    """
    key = record["object_key"]
    failed: list[Finding] = []
    st = store.stat(key, version_id)
    if st is None and version_id is not None:
        st = store.stat(key)
        if st is not None:
            failed.append(Finding("object_version", f"version {version_id} of {key} is gone; another object "
                                                    "now sits at the key"))
    if st is None:
        return ObjectCheck(present=False)
    if st.record is None or canonical_json(st.record) != canonical_json(dict(record)):
        failed.append(Finding("record_metadata", "the ledger record in the object's metadata differs from the "
                                                 "index's (another segment's object, or a rewritten one)"))
    blob = store.get(key, st.version_id)
    got = hashlib.sha256(blob).hexdigest()
    if got != record.get("object_sha256") or len(blob) != record.get("object_size"):
        failed.append(Finding("object_sha256", f"stored object SHA-256 is {got} ({len(blob)} bytes), the ledger "
                                               f"recorded {record.get('object_sha256')} ({record.get('object_size')})"))
    ctx = SegmentContext(camera=record["camera"], object_key=key, start=record["start"], end=record["end"])
    try:
        plain = decrypt(blob, ctx, keyring.kek)
    except IntegrityError as e:
        failed.append(Finding(e.check or "decrypt", str(e)))
        return ObjectCheck(present=True, failed=tuple(failed))
    except KeyringError as e:
        failed.append(Finding("kek", str(e)))
        return ObjectCheck(present=True, failed=tuple(failed))
    del blob
    got = hashlib.sha256(plain).hexdigest()
    if got != record.get("sha256") or len(plain) != record.get("size"):
        failed.append(Finding("sha256", f"decrypted SHA-256 is {got} ({len(plain)} bytes), the ledger recorded "
                                        f"{record.get('sha256')} ({record.get('size')})"))
    if not failed and sink is not None:
        sink(record, plain)
    return ObjectCheck(present=True, failed=tuple(failed))
