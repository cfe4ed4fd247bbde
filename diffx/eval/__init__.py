"""Evaluation recipes that train detectors and layout nets to score a shard set: downstream detection, dense layouts."""
