"""Measurements that training, curation and evaluation share: image metrics, grids, COCO mAP, Inception features,
layout agreement and the measuring pass of a detector over a shard set.

Below every stage: it imports models and shards, never a trainer or a stage.
"""
