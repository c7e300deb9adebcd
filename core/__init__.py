"""Code every process shares: settings, database models, crypto, email rendering."""
