"""Datasets: the data.yaml schema, and the built-in synthetic dataset."""
