"""Captions: backends (template, LMM), caching, refinement rules and the human review loop."""
