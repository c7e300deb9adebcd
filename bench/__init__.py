"""Benchmarks of the real stack: `python -m bench` (see README, "Benchmarks")."""
