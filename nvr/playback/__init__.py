"""Layer 3, stage playback: clips of stored segments."""
