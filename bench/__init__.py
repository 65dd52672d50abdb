"""Benchmarks and the data they need; run from the repository root as `python -m bench.<name>`."""
