"""Sampling: schedulers, the DiffX pipeline (CFG over caption and layout), layout planning, generation."""
