"""Infrastructure the study's steps share: atomic file writes, GPU slots for concurrent jobs, device names."""
