"""Layer 3, stage recording: ffmpeg runs per camera, their supervision, the camera registry."""
