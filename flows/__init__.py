"""Prefect flows over the diffx library: the same stage functions as the CLI and dvc.yaml, no stage logic here."""
