"""Figures from plain arrays and metrics files (matplotlib, imported lazily): point clouds, paths,
fields, curves, image grids, animations (plots.py) and the picture of a search (search.py).
A leaf: imports nothing else of the package."""
