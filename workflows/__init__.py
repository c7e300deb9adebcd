"""Temporal workflows: deterministic, no I/O; each models one person's durable process."""
