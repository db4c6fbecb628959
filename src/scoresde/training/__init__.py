"""Training: typed configs, checkpoints, EMA, torchrun helpers, the loop and evaluation."""
