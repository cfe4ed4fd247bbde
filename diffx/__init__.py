"""diffx: layout-guided cross-modal synthetic data pipeline built around DiffX."""

__version__ = "0.1.0"
