"""The checkpoint writer (nvr.custody.checkpoint): signing on an interval and at stop, key rotation, refusals."""

from __future__ import annotations

import pytest

from nvr.custody.checkpoint import (
    CheckpointRefused,
    checkpoint_key,
    key_object_key,
    load_public_pem,
    parse_checkpoint,
    trusted_keys,
)
from storage.ledger import canonical_json
from tests.support.rawsql import sql_rows, tampering

pytestmark = pytest.mark.integration


async def test_key_rotation_keeps_old_keys_and_checkpoints_verify(custody):
    await custody.record("cam", [0, 1])
    await custody.writer.start()  # publishes the first key
    try:
        await custody.writer.write_all()
        old = custody.keyring.signing_key.key_id
        new = custody.keyring.rotate_signing_key()
        await custody.record("cam", [2, 3])
        await custody.writer.write_all()
    finally:
        await custody.writer.stop()
    client = custody.client()
    published = {o.object_name for o in client.list_objects(custody.bucket, prefix="ledger/keys/")}
    assert published == {key_object_key(old), key_object_key(new)}
    assert set(trusted_keys(custody.keyring)) == {old, new}
    # A third party checks each checkpoint with nothing but the published PEM.
    for seq, kid in ((1, old), (3, new)):
        pub = load_public_pem(client.get_object(custody.bucket, key_object_key(kid)).read())
        cp = parse_checkpoint(client.get_object(custody.bucket, checkpoint_key("cam", seq)).read(), {kid: pub},
                              camera="cam", seq=seq)
        assert cp.key_id == kid
    report = await custody.verify("cam")
    assert report.verdict == "ok" and [s.checkpoint for s in report.segments] == [1, 1, 3, 3]


async def test_writer_signs_on_interval_and_at_stop_and_refuses_an_edited_chain(custody):
    custody.writer.interval = 0.05
    await custody.record("cam", [0])
    await custody.writer.start()
    try:
        await custody.writer.wait_rounds(1, timeout=10)
        assert sql_rows(custody.index, "SELECT seq FROM checkpoints WHERE camera = 'cam'") == [(0,)]
        await custody.record("cam", [1])
        done = custody.writer.rounds
        await custody.writer.wait_rounds(done + 2, timeout=10)
        assert sql_rows(custody.index, "SELECT MAX(seq) FROM checkpoints WHERE camera = 'cam'") == [(1,)]
        custody.writer.interval = 3600
        await custody.writer.wait_rounds(custody.writer.rounds + 1, timeout=10)  # now parked for an hour
        await custody.record("cam", [2])
    finally:
        await custody.writer.stop()  # the final checkpoint, at shutdown
    assert sql_rows(custody.index, "SELECT MAX(seq) FROM checkpoints WHERE camera = 'cam'") == [(2,)]
    assert custody.client().stat_object(custody.bucket, checkpoint_key("cam", 2))

    # A record edited before it was checkpointed: the writer will not attest the chain built on it.
    await custody.record("cam", [3])
    rec = custody.index.ledger_records("cam", 3, 3)[0]
    rec["size"] += 1
    with tampering(custody.index) as db:
        db.execute("UPDATE ledger SET record = ? WHERE camera = 'cam' AND seq = 3", (canonical_json(rec).decode(),))
    await custody.record("cam", [4])
    with pytest.raises(CheckpointRefused):
        await custody.writer.write_now("cam")
    assert custody.events and custody.events[-1][0] == "ledger.checkpoint_refused"
