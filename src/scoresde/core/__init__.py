"""Maths on tensors: SDEs, score parameterizations, DSM losses, ODE integration, likelihood, the
Gaussian-mixture oracle and the boundary checks. Knows no configs, files or optimizers."""
