"""Object storage, envelope encryption, hashing, ingest, index and ledger."""
