"""Figures from plain arrays and metrics files (matplotlib, imported lazily): point clouds, paths,
fields, curves, image grids, animations. A leaf: imports nothing else of the package."""
