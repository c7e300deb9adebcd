"""The thin FastAPI layer: admin API, sign-on pages, codec endpoint."""
