"""Parquet shards: the one on-disk format every stage reads and writes (DESIGN.md section 4)."""
