"""Layer 3, stage custody: signed checkpoints, verification, evidence bundles and exports, reindex."""
