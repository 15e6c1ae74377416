"""Layer 3, stage ingest: spool file to encrypted object, ledger record and index row."""
