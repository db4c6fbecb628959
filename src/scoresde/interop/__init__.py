"""Interoperability with other codebases: the official score_sde_pytorch checkpoints."""
