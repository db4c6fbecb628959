"""The application layer: command line, hyperparameter search, demo and plots."""
