"""The application layer: the command line, the hyperparameter search and the demo."""
