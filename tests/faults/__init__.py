"""Fault tests: the real stack broken on purpose (`pytest -m faults`)."""
