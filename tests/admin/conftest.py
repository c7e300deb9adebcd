"""Fixtures of the admin tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings
from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SEAL_PUBLIC_KEY, TEST_SECRET_KEY


@pytest.fixture
def cli_database(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """SSO_* settings for the `sso` command run in-process against the test database."""
    for name in list(os.environ):
        if name.startswith("SSO_") and name != "SSO_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in {
        "SSO_ENV": "test",
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_SEAL_PUBLIC_KEY": TEST_SEAL_PUBLIC_KEY,
        "SSO_PUBLIC_URL": "https://sso.example.test",
        "SSO_DATABASE_URL": database_url,
        "SSO_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()
