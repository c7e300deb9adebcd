"""Temporal activities: everything that touches email, the database, clocks or randomness."""
