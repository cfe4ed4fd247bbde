"""Evaluation: image metrics, sample grids, realism/alignment/layout fidelity and downstream detection."""
