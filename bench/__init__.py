"""Benchmarks of the real stack: `python -m bench` (see bench/README.md)."""
