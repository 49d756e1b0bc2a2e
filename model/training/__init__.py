"""Offline training: corpus, editor-shaped examples, losses, the trainer and its held-out batches."""
