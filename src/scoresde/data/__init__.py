"""Data: toy sets, arrays and standardization, image readers, the data-set table, download, and
the maps to model space (dequantization). Knows no SDE."""
