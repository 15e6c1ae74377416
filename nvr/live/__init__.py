"""Live view: the fragments each recorder's ffmpeg writes, fanned out to viewers as they reach the spool."""
