"""Stage curate: score each generated sample and keep the ones a detector should learn from."""
