import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import EmailBackend, Environment, InsecureSettingsError, Settings
from tests.support.config import (
    TEST_ENCRYPTION_KEY,
    TEST_SEAL_PUBLIC_KEY,
    TEST_SECRET_KEY,
    make_settings,
)

PUBLIC_URL = "https://sso.example.test"


@pytest.fixture(autouse=True)
def _no_sso_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SSO_* from outside; development asked for, as `sso dev` does (production is the
    default): the tests about production say so."""
    import os

    for name in list(os.environ):
        if name.startswith("SSO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SSO_ENV", "development")


def test_defaults_in_development(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.setup_link_ttl == timedelta(minutes=15)
    assert settings.brand_name == "agentOS"
    assert settings.email_backend is EmailBackend.outbox
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / '.data' / 'sso.db'}"
    assert settings.public_url == "http://localhost:8000"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("900", timedelta(minutes=15)),
        ("PT15M", timedelta(minutes=15)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("60", timedelta(seconds=60)),
    ],
)
def test_link_ttl_takes_seconds_or_iso8601(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: timedelta
) -> None:
    monkeypatch.setenv("SSO_SETUP_LINK_TTL", raw)
    assert Settings().setup_link_ttl == expected


@pytest.mark.parametrize("raw", ["0", "-5", "fifteen minutes"])
def test_link_ttl_rejects_nonsense(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SSO_SETUP_LINK_TTL", raw)
    with pytest.raises(ValidationError):
        Settings()


def test_encryption_keys_are_a_list_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    other = "b" * 43 + "="
    monkeypatch.setenv("SSO_ENCRYPTION_KEYS", f"{TEST_ENCRYPTION_KEY}, {other}")
    keys = [k.get_secret_value() for k in Settings().encryption_keys]
    assert keys == [TEST_ENCRYPTION_KEY, other]


def test_encryption_key_must_be_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_ENCRYPTION_KEYS", "c2hvcnQ=")
    with pytest.raises(ValidationError, match="32 bytes"):
        Settings()


@pytest.mark.parametrize("env", ["production", "test"])
def test_refuses_missing_secrets_outside_development(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("SSO_ENV", env)
    monkeypatch.setenv("SSO_DATABASE_URL", "postgresql+psycopg://db/sso")
    with pytest.raises(InsecureSettingsError) as err:
        Settings()
    message = str(err.value)
    assert "SSO_SECRET_KEY" in message
    assert "SSO_ENCRYPTION_KEYS" in message


def test_refuses_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_ENV", "production")
    monkeypatch.setenv("SSO_SECRET_KEY", "changeme")
    monkeypatch.setenv("SSO_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEY)
    monkeypatch.setenv("SSO_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SSO_DATABASE_URL", "postgresql+psycopg://db/sso")
    with pytest.raises(InsecureSettingsError, match="SSO_SECRET_KEY is missing or a placeholder"):
        Settings()


def test_production_refuses_outbox_and_open_codec() -> None:
    with pytest.raises(InsecureSettingsError) as err:
        Settings(
            env="production",
            secret_key=TEST_SECRET_KEY,
            encryption_keys=[TEST_ENCRYPTION_KEY],
            database_url="postgresql+psycopg://db/sso",
            codec_dev_open=True,
        )
    assert "SSO_CODEC_DEV_OPEN" in str(err.value)
    assert "outbox" in str(err.value)


def test_production_accepts_real_secrets() -> None:
    settings = Settings(
        env="production",
        secret_key=TEST_SECRET_KEY,
        encryption_keys=[TEST_ENCRYPTION_KEY],
        email_backend="smtp",
        database_url="postgresql+psycopg://db/sso",
        seal_public_key=TEST_SEAL_PUBLIC_KEY,
        public_url=PUBLIC_URL,
    )
    assert settings.async_database_url == "postgresql+psycopg://db/sso"


def test_production_is_the_default_and_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Development (generated secrets, /dev/mailbox, plain http) is asked for, never assumed."""
    monkeypatch.delenv("SSO_ENV")
    monkeypatch.chdir(tmp_path)
    assert Settings.model_fields["env"].default is Environment.production
    with pytest.raises(InsecureSettingsError) as err:
        Settings()
    message = str(err.value)
    assert "SSO_ENV=production" in message
    assert "SSO_PUBLIC_URL must be an https:// address" in message
    assert "SSO_SECRET_KEY" in message
    assert not (tmp_path / ".data").exists()  # no development secrets made


@pytest.mark.parametrize("env", ["production", "test"])
@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://sso.example.com",
        "https://",
        "ftp://sso.example.com",
        "sso.example.com",
    ],
)
def test_outside_development_the_public_url_must_be_https(env: str, url: str) -> None:
    real = {
        "secret_key": TEST_SECRET_KEY,
        "encryption_keys": [TEST_ENCRYPTION_KEY],
        "seal_public_key": TEST_SEAL_PUBLIC_KEY,
        "email_backend": "smtp",
        "database_url": "postgresql+psycopg://db/sso",
    }
    with pytest.raises(InsecureSettingsError) as err:
        Settings(env=env, public_url=url, **real)
    assert "SSO_PUBLIC_URL must be an https:// address outside development" in str(err.value)
    assert (
        Settings(env=env, public_url="https://sso.example.com", **real).public_url
        == "https://sso.example.com"
    )


def test_development_may_use_plain_http() -> None:
    assert (
        Settings(env="development", public_url="http://localhost:8000").public_url == "http://localhost:8000"
    )


def test_development_creates_and_keeps_secrets(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).with_dev_secrets()
    second = Settings(data_dir=tmp_path).with_dev_secrets()
    assert len(first.secret_key.get_secret_value()) >= 32
    assert first.secret_key == second.secret_key
    assert first.encryption_keys == second.encryption_keys
    assert first.seal_public_key and first.seal_public_key == second.seal_public_key
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0


def test_database_url_drivers() -> None:
    settings = make_settings(database_url="sqlite:////tmp/x.db")
    assert settings.async_database_url == "sqlite+aiosqlite:////tmp/x.db"
    assert settings.sync_database_url == "sqlite:////tmp/x.db"
    assert make_settings(database_url="postgresql://h/db").async_database_url == ("postgresql+psycopg://h/db")


def test_public_url_trailing_slash_is_dropped() -> None:
    assert make_settings(public_url="https://sso.example.com/").public_url == ("https://sso.example.com")


@pytest.mark.parametrize(
    ("time_cost", "memory_kib"),
    [(1, 47104), (2, 19456), (3, 12288), (4, 9216), (5, 7168), (8, 7168), (2, 65536)],
)
def test_argon2_accepts_owasps_equally_strong_settings(time_cost: int, memory_kib: int) -> None:
    settings = Settings(argon2_time_cost=time_cost, argon2_memory_kib=memory_kib)
    assert (settings.argon2_time_cost, settings.argon2_memory_kib) == (time_cost, memory_kib)


@pytest.mark.parametrize(
    ("time_cost", "memory_kib"), [(1, 19456), (2, 12288), (3, 9216), (4, 7168), (5, 4096), (0, 65536)]
)
def test_argon2_refuses_anything_weaker(time_cost: int, memory_kib: int) -> None:
    with pytest.raises(ValidationError, match="argon2"):
        Settings(argon2_time_cost=time_cost, argon2_memory_kib=memory_kib)


def _settings_table_rows() -> dict[str, str]:
    """`SSO_*` variable -> its default, from the settings table in docs/settings.md."""
    section = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        for name in re.findall(r"`(SSO_[A-Z0-9_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_every_setting_is_in_the_settings_table_with_its_default() -> None:
    rows = _settings_table_rows()
    names = {f"SSO_{name.upper()}" for name in Settings.model_fields}
    assert not sorted(names - set(rows)), f"settings missing from the table: {sorted(names - set(rows))}"
    assert not sorted(set(rows) - names), f"the table names unknown settings: {sorted(set(rows) - names)}"
    assert all(rows[name] for name in names), {n: d for n, d in rows.items() if not d}
    # What the issue names, with the defaults the code really has.
    assert rows["SSO_BRAND_NAME"] == "`agentOS`"
    assert "15 minutes" in rows["SSO_SETUP_LINK_TTL"]
    assert rows["SSO_TEMPORAL_NAMESPACE"] == f"`{Settings.model_fields['temporal_namespace'].default}`"
    assert rows["SSO_TASK_QUEUE"] == f"`{Settings.model_fields['task_queue'].default}`"
    assert rows["SSO_EMAIL_BACKEND"] == "`outbox`"


@pytest.mark.parametrize(
    "placeholder",
    [
        "CHANGEME",
        "change-me-to-a-long-random-secret-before-production",
        "<generate with sso keys generate>",
        "...",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "replace_me_with_a_real_secret_of_48_characters_or_more",
        "your-secret-key-for-example-purposes-only-1234567890",
    ],
)
def test_refuses_long_or_templated_placeholders_and_names_them(placeholder: str) -> None:
    """What people paste from a template is refused even when it is long enough."""
    real = {
        "secret_key": TEST_SECRET_KEY,
        "encryption_keys": [TEST_ENCRYPTION_KEY],
        "seal_public_key": TEST_SEAL_PUBLIC_KEY,
        "email_backend": "sendgrid",
        "sendgrid_api_key": "SG.a-real-looking-sendgrid-api-key",
        "database_url": "postgresql+psycopg://db/sso",
        "public_url": PUBLIC_URL,
    }
    Settings(env="production", **real)  # the real values start
    for field, variable in (
        ("secret_key", "SSO_SECRET_KEY"),
        ("encryption_keys", "SSO_ENCRYPTION_KEYS"),
        ("seal_public_key", "SSO_SEAL_PUBLIC_KEY"),
        ("bootstrap_admin_key", "SSO_BOOTSTRAP_ADMIN_KEY"),
        ("sendgrid_api_key", "SSO_SENDGRID_API_KEY"),
        ("metrics_token", "SSO_METRICS_TOKEN"),
    ):
        value: object = [placeholder] if field == "encryption_keys" else placeholder
        with pytest.raises(InsecureSettingsError) as err:
            Settings(env="production", **{**real, field: value})
        assert variable in str(err.value), (field, str(err.value))
        assert placeholder not in str(err.value)  # says which setting, never its value


def test_smtp_password_placeholder_is_refused() -> None:
    with pytest.raises(InsecureSettingsError, match="SSO_SMTP_PASSWORD is a placeholder"):
        Settings(
            env="production",
            secret_key=TEST_SECRET_KEY,
            encryption_keys=[TEST_ENCRYPTION_KEY],
            seal_public_key=TEST_SEAL_PUBLIC_KEY,
            email_backend="smtp",
            smtp_username="mailer",
            smtp_password="changeme",
            database_url="postgresql+psycopg://db/sso",
        )
