"""The canonical multi-modal sample, its validation, and everything that produces samples."""
