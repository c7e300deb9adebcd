"""The one settings object. Every process reads its configuration here, from `SSO_*`."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.addresses import Networks, parse_networks
from core.times import time_zone

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "please-change", "dev", "development"}
# Long enough never to occur by chance in a generated secret.
PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "change-this",
    "change_this",
    "replaceme",
    "replace-me",
    "replace_me",
    "placeholder",
    "example",
)


def is_placeholder(value: str) -> bool:
    """Empty, a well-known stand-in, a template's `...`/`<...>`, or one spelling out that
    it must be changed: never a secret to start with outside development."""
    text = value.strip().lower()
    return (
        text in PLACEHOLDER_SECRETS
        or set(text) <= set(".x*")
        or (text.startswith("<") and text.endswith(">"))
        or any(marker in text for marker in PLACEHOLDER_MARKERS)
    )


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class MfaPolicy(StrEnum):
    optional = "optional"
    required = "required"


class EmailBackend(StrEnum):
    outbox = "outbox"
    smtp = "smtp"
    sendgrid = "sendgrid"


# The settings given as a list: JSON, or comma-separated.
LISTS = (
    "encryption_keys",
    "codec_cors_origins",
    "allowed_return_urls",
    "entra_allowed_tenants",
    "trusted_proxies",
    "mfa_reminders",
)
# The settings that may be left out: blank means not set.
OPTIONAL = (
    "metrics_token",
    "temporal_api_key",
    "temporal_tls_ca",
    "temporal_tls_cert",
    "temporal_tls_key",
)
# The settings that are lengths of time: given in seconds or as ISO 8601, always positive.
DURATIONS = (
    "setup_link_ttl",
    "email_retry_window",
    "email_retry_initial_interval",
    "email_retry_max_interval",
    "setup_email_window",
    "setup_ttl",
    "code_ttl",
    "code_resend_interval",
    "step_timeout",
    "session_idle_ttl",
    "session_max_ttl",
    "reset_ttl",
    "reset_link_ttl",
    "entra_link_fresh",
    "entra_state_ttl",
    "oidc_code_ttl",
    "oidc_access_token_ttl",
    "oidc_id_token_ttl",
    "oidc_key_publish_lead",
    "mfa_grace",
)


class InsecureSettingsError(RuntimeError):
    """Raised when a non-development process would start with missing or placeholder secrets."""


def _seconds(value: Any) -> Any:
    """A duration given as a number of seconds; anything else is left to pydantic (ISO 8601)."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value
    return value


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SSO_", extra="ignore")

    # Development (generated secrets, /dev/mailbox, plain http) is asked for: `sso dev` does.
    env: Environment = Environment.production
    data_dir: Path = Path(".data")
    database_url: str = ""
    log_level: str = "INFO"

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "sso"
    # TLS (or mTLS with a client certificate) and API keys for the Temporal frontend: the
    # frontend must authenticate clients, as terminate, cancel and reset carry no payload.
    temporal_tls: bool = False
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: SecretStr | None = None
    # Payloads from before they were bound to their flow (core/codec.py) are believed until
    # then: set it past the end of the last flow running at that deploy.
    temporal_unbound_until: AwareDatetime | None = None

    public_url: str = "http://localhost:8000"
    brand_name: str = "agentOS"
    support_email: str = "support@agentos.com"
    # The IANA zone of the times in emails (and of pages' times until the browser's own
    # zone replaces them): agents read "valid until 20:43 BST", not UTC.
    time_zone: str = "Europe/London"

    email_backend: EmailBackend = EmailBackend.outbox
    email_from: str = "no-reply@agentos.com"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    # Seconds one SMTP or SendGrid call may take before it counts as a transient failure.
    email_timeout: float = Field(default=10.0, gt=0)
    # How long a transient email failure is retried before the flow ends as failed.
    email_retry_window: timedelta = timedelta(hours=1)
    email_retry_initial_interval: timedelta = timedelta(seconds=2)
    email_retry_max_interval: timedelta = timedelta(minutes=2)

    setup_link_ttl: timedelta = timedelta(minutes=15)
    # How long a person has to finish, once the link has been used.
    setup_ttl: timedelta = timedelta(hours=24)
    code_ttl: timedelta = timedelta(minutes=10)
    code_resend_interval: timedelta = timedelta(seconds=60)
    code_max_resends: int = Field(default=5, ge=0)
    password_min_length: int = Field(default=15, ge=8, le=256)
    # Any of OWASP's equally strong settings (core.passwords.OWASP_MIN_MEMORY_KIB).
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19456, ge=7168)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Passwords and codes travel to the worker sealed to this X25519 key; only workers hold
    # the private half, so not even an operator with the codec key can read them in history.
    seal_public_key: str = ""
    seal_private_key: SecretStr = SecretStr("")
    # Signed-in sessions: idle and absolute lifetimes, enforced on the server.
    session_idle_ttl: timedelta = timedelta(minutes=30)
    session_max_ttl: timedelta = timedelta(hours=12)
    # Where sign-in may send a person back to (exact URLs or origins ending in "/").
    allowed_return_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Shared counters for several web app instances; the database is used without it.
    redis_url: str | None = None
    signin_ip_limit: int = Field(default=50, ge=1)  # failed sign-ins per IP per 15 minutes
    # Passkey ceremonies begun per IP per 15 minutes (each stores a challenge for 5 minutes).
    passkey_ip_limit: int = Field(default=200, ge=1)
    reset_request_ip_limit: int = Field(default=20, ge=1)  # reset requests per IP per hour
    reset_ttl: timedelta = timedelta(hours=1)
    # Wrong reset codes, across browsers: per flow, and per account over a rolling day.
    reset_wrong_code_flow_limit: int = Field(default=10, ge=1)
    reset_wrong_code_day_limit: int = Field(default=20, ge=1)
    reset_link_ttl: timedelta = timedelta(minutes=15)
    # "Change Password" posts per IP and per reset session, per SSO_RESET_TTL.
    reset_submit_ip_limit: int = Field(default=100, ge=1)
    reset_submit_session_limit: int = Field(default=30, ge=1)
    # How long a page waits for the workflow before saying "try again in a minute".
    step_timeout: timedelta = timedelta(seconds=5)
    # "Send Single Sign-On Email" per person, counted in the database across instances.
    setup_email_limit: int = Field(default=5, ge=1)
    setup_email_window: timedelta = timedelta(hours=1)
    # Bulk sends (a staff batch): Single Sign-On emails started per minute, and the emails
    # an organisation (today: the deployment) may be sent per hour.
    batch_send_rate: int = Field(default=120, ge=1)
    org_email_budget: int = Field(default=2000, ge=1)
    # People per activity of an organisation's suspension and erasure flows.
    org_flow_chunk_size: int = Field(default=50, ge=1, le=500)
    # Finished rows (expired sessions and links, sent emails' records, old counters...) are
    # deleted this many days after they stopped mattering (core/retention.py); audit stays.
    retention_days: int = Field(default=30, ge=1)
    # Admin API requests per key, and failed authentications per IP, per minute.
    admin_rate_limit: int = Field(default=300, ge=1)
    auth_failure_limit: int = Field(default=20, ge=1)
    # Admin API requests per organisation per minute, all its keys together: one agency's
    # scripts can't take the whole API (operator keys count per key only).
    org_admin_rate_limit: int = Field(default=600, ge=1)
    # Reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed; from any
    # other peer the header is ignored. Empty: the connection's own peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    secret_key: SecretStr = SecretStr("")
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    bootstrap_admin_key: SecretStr | None = None

    # Method 1, Microsoft Entra (OIDC). Without a client id and secret the button is hidden.
    entra_tenant_id: str = ""
    entra_client_id: str = ""
    entra_client_secret: SecretStr | None = None
    # Tenants whose people may sign in; empty means just SSO_ENTRA_TENANT_ID.
    entra_allowed_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Empty: the tenant's own discovery document at login.microsoftonline.com.
    entra_metadata_url: str = ""
    entra_scopes: str = "openid profile email User.Read"
    graph_url: str = "https://graph.microsoft.com"
    # How recent a password sign-in must be before it may link a Microsoft account.
    entra_link_fresh: timedelta = timedelta(minutes=10)
    # How long what Graph said of a linked Microsoft account (enabled, disabled, deleted) is
    # trusted before a password sign-in asks again.
    entra_state_ttl: timedelta = timedelta(minutes=15)
    # `sso dev` and tests: serve a Graph stand-in over the local OIDC provider.
    entra_dev_graph: bool = False

    # The OpenID Connect provider (docs/oidc.md). Codes are single use and short-lived.
    oidc_code_ttl: timedelta = timedelta(seconds=60)
    oidc_access_token_ttl: timedelta = timedelta(minutes=10)
    oidc_id_token_ttl: timedelta = timedelta(minutes=10)
    # A rotated signing key is in the JWKS this long before it signs, so apps that cache the
    # JWKS have fetched it before they meet a token it signed.
    oidc_key_publish_lead: timedelta = timedelta(minutes=15)
    # Token endpoint requests per client and per IP, per minute.
    oidc_token_client_limit: int = Field(default=600, ge=1)
    oidc_token_ip_limit: int = Field(default=300, ge=1)
    # A refused refresh is always audited; a successful one only when this is on: apps
    # refresh every few minutes per session, a row each would swamp the trail and cost every
    # refresh a write.
    oidc_audit_refreshes: bool = False

    # Whether everyone must set up a second factor (administrators always must; people who
    # sign in only with Microsoft are exempt). Under `required` a person who skipped MFA is
    # reminded at SSO_MFA_REMINDERS after the skip and must set it up at sign-in once
    # SSO_MFA_GRACE has passed; under `optional` one reminder goes out at SSO_MFA_GRACE.
    mfa_policy: MfaPolicy = MfaPolicy.optional
    mfa_reminders: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [timedelta(days=3), timedelta(days=7), timedelta(days=13)]
    )
    mfa_grace: timedelta = timedelta(days=14)

    # Origins allowed to call the codec endpoint from a browser (the Temporal UI).
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Only `sso dev` sets this: lets the local Temporal UI decode without an admin key.
    codec_dev_open: bool = False

    # The worker serves its Temporal runtime metrics (ours included) here; empty turns it off.
    worker_metrics_address: str = "127.0.0.1:9464"
    # The web app's /metrics appends what it reads here (`sso dev` sets it); empty: nothing.
    worker_metrics_url: str = ""
    # A bearer token for Prometheus, so scrapers need no admin key.
    metrics_token: SecretStr | None = None
    # Sign-in and email counters labelled by organisation (its slug): one series per agency.
    metrics_org_labels: bool = False

    @field_validator(*LISTS, mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_ranges(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator(*OPTIONAL, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("time_zone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        time_zone(value)
        return value

    @field_validator("public_url", "graph_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator(*DURATIONS, mode="before")
    @classmethod
    def _seconds_or_iso8601(cls, value: Any) -> Any:
        return _seconds(value)

    @field_validator("mfa_reminders", mode="before")
    @classmethod
    def _each_seconds_or_iso8601(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            return [_seconds(item) for item in value]
        return value

    @field_validator(*DURATIONS)
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _keys_are_32_bytes(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            if is_placeholder(key.get_secret_value()):
                continue
            try:
                raw = base64.urlsafe_b64decode(_pad(key.get_secret_value()))
            except ValueError as exc:
                raise ValueError(f"key {index + 1} is not urlsafe base64") from exc
            if len(raw) != 32:
                raise ValueError(f"key {index + 1} must decode to 32 bytes, not {len(raw)}")
        return value

    @model_validator(mode="after")
    def _mfa_reminders_before_grace(self) -> Settings:
        for reminder in self.mfa_reminders:
            if reminder <= timedelta(0):
                raise ValueError("SSO_MFA_REMINDERS must be positive durations")
            if reminder >= self.mfa_grace:
                raise ValueError(
                    f"SSO_MFA_REMINDERS must each come before SSO_MFA_GRACE ({self.mfa_grace}), "
                    f"not at {reminder}"
                )
        if len(set(self.mfa_reminders)) != len(self.mfa_reminders):
            raise ValueError("SSO_MFA_REMINDERS holds the same duration twice")
        self.mfa_reminders = sorted(self.mfa_reminders)
        return self

    @model_validator(mode="after")
    def _argon2_at_least_owasp(self) -> Settings:
        from core.passwords import argon2_problem

        problem = argon2_problem(self.argon2_time_cost, self.argon2_memory_kib, self.argon2_parallelism)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _temporal_tls_files(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError(
                "SSO_TEMPORAL_TLS_CERT and SSO_TEMPORAL_TLS_KEY go together (a "
                "client certificate needs its private key)"
            )
        for name, path in (
            ("SSO_TEMPORAL_TLS_CA", self.temporal_tls_ca),
            ("SSO_TEMPORAL_TLS_CERT", self.temporal_tls_cert),
            ("SSO_TEMPORAL_TLS_KEY", self.temporal_tls_key),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}={path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _refuse_insecure_outside_development(self) -> Settings:
        if self.env is Environment.development:
            if not self.database_url:
                self.database_url = f"sqlite+aiosqlite:///{self.resolved_data_dir / 'sso.db'}"
            return self
        problems = []
        if not is_https(self.public_url):
            problems.append(
                f"SSO_PUBLIC_URL must be an https:// address outside development, "
                f"not {self.public_url!r} (over http cookies lose Secure and the "
                "__Host- prefix)"
            )
        if is_placeholder(self.secret_key.get_secret_value()):
            problems.append("SSO_SECRET_KEY is missing or a placeholder")
        elif len(self.secret_key.get_secret_value()) < 32:
            problems.append("SSO_SECRET_KEY must be at least 32 characters")
        if not self.encryption_keys or any(
            is_placeholder(k.get_secret_value()) for k in self.encryption_keys
        ):
            problems.append("SSO_ENCRYPTION_KEYS is missing or holds a placeholder")
        if is_placeholder(self.seal_public_key):
            problems.append(
                "SSO_SEAL_PUBLIC_KEY is missing or a placeholder (workers also need SSO_SEAL_PRIVATE_KEY)"
            )
        if self.seal_private_key.get_secret_value() and is_placeholder(
            self.seal_private_key.get_secret_value()
        ):
            problems.append("SSO_SEAL_PRIVATE_KEY is a placeholder")
        if self.bootstrap_admin_key is not None:
            if is_placeholder(self.bootstrap_admin_key.get_secret_value()):
                problems.append("SSO_BOOTSTRAP_ADMIN_KEY is a placeholder")
            elif len(self.bootstrap_admin_key.get_secret_value()) < 32:
                problems.append("SSO_BOOTSTRAP_ADMIN_KEY must be at least 32 characters")
        if self.email_backend is EmailBackend.sendgrid and (
            self.sendgrid_api_key is None or is_placeholder(self.sendgrid_api_key.get_secret_value())
        ):
            problems.append(
                "SSO_SENDGRID_API_KEY is required with SSO_EMAIL_BACKEND=sendgrid (missing or a placeholder)"
            )
        if (
            self.email_backend is EmailBackend.smtp
            and self.smtp_password is not None
            and self.smtp_password.get_secret_value()
            and is_placeholder(self.smtp_password.get_secret_value())
        ):
            problems.append("SSO_SMTP_PASSWORD is a placeholder")
        if self.metrics_token is not None and (
            is_placeholder(self.metrics_token.get_secret_value())
            or len(self.metrics_token.get_secret_value()) < 32
        ):
            problems.append("SSO_METRICS_TOKEN must be at least 32 characters, not a placeholder")
        if self.codec_dev_open:
            problems.append("SSO_CODEC_DEV_OPEN is only allowed in development")
        if self.entra_dev_graph and self.env is Environment.production:
            problems.append("SSO_ENTRA_DEV_GRAPH is only for development and tests")
        if self.entra_client_id and (
            self.entra_client_secret is None or is_placeholder(self.entra_client_secret.get_secret_value())
        ):
            problems.append("SSO_ENTRA_CLIENT_SECRET is missing or a placeholder")
        if self.email_backend is EmailBackend.outbox and self.env is Environment.production:
            problems.append("SSO_EMAIL_BACKEND=outbox is only for development and tests")
        if not self.database_url:
            problems.append("SSO_DATABASE_URL is missing")
        if problems:
            raise InsecureSettingsError(
                f"refusing to start with SSO_ENV={self.env.value}: " + "; ".join(problems)
            )
        return self

    @property
    def trusted_proxy_networks(self) -> Networks:
        return parse_networks(self.trusted_proxies)

    @property
    def entra_enabled(self) -> bool:
        return bool(
            self.entra_client_id
            and self.entra_client_secret is not None
            and self.entra_client_secret.get_secret_value()
            and (self.entra_tenant_id or self.entra_metadata_url)
        )

    @property
    def entra_discovery_url(self) -> str:
        if self.entra_metadata_url:
            return self.entra_metadata_url
        return (
            f"https://login.microsoftonline.com/{self.entra_tenant_id}/v2.0/.well-known/openid-configuration"
        )

    @property
    def entra_tenants(self) -> frozenset[str]:
        tenants = self.entra_allowed_tenants or ([self.entra_tenant_id] if self.entra_tenant_id else [])
        return frozenset(t.strip().lower() for t in tenants if t.strip())

    @property
    def entra_redirect_uri(self) -> str:
        return f"{self.public_url}/sso/entra/callback"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def zone(self) -> ZoneInfo:
        return time_zone(self.time_zone)

    @property
    def is_development(self) -> bool:
        return self.env is Environment.development

    @property
    def async_database_url(self) -> str:
        return to_async_url(self.database_url)

    @property
    def sync_database_url(self) -> str:
        return to_sync_url(self.database_url)

    def with_dev_secrets(self) -> Settings:
        """Development only: fill missing secrets from a file in the data dir, created once."""
        if not self.is_development:
            return self
        if (
            self.secret_key.get_secret_value()
            and self.encryption_keys
            and self.seal_public_key
            and self.seal_private_key.get_secret_value()
        ):
            return self
        from core.sealing import new_keypair

        path = self.resolved_data_dir / "dev-secrets.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        before = dict(stored)
        stored.setdefault("secret_key", secrets.token_urlsafe(48))
        stored.setdefault("encryption_key", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        if "seal_private_key" not in stored:
            stored["seal_private_key"], stored["seal_public_key"] = new_keypair()
        if stored != before:
            path.write_text(json.dumps(stored))
            path.chmod(0o600)
        update: dict[str, Any] = {}
        if not self.secret_key.get_secret_value():
            update["secret_key"] = SecretStr(stored["secret_key"])
        if not self.encryption_keys:
            update["encryption_keys"] = [SecretStr(stored["encryption_key"])]
        if not self.seal_public_key and not self.seal_private_key.get_secret_value():
            update["seal_public_key"] = stored["seal_public_key"]
            update["seal_private_key"] = SecretStr(stored["seal_private_key"])
        return self.model_copy(update=update)


def is_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def to_async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql+psycopg:" + url.split(":", 1)[1]
    return url


def to_sync_url(url: str) -> str:
    if url.startswith("sqlite+aiosqlite:"):
        return "sqlite:" + url.removeprefix("sqlite+aiosqlite:")
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings().with_dev_secrets()
