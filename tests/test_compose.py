"""Static checks of the docker compose deployment (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

EXPECTED_SERVICES = {
    "postgres",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "mailpit",
    "migrate",
    "web",
    "worker",
}
APP_SERVICES = ("web", "worker", "migrate")
REQUIRED_SSO_SETTINGS = {
    "SSO_ENV",
    "SSO_DATABASE_URL",
    "SSO_TEMPORAL_ADDRESS",
    "SSO_TEMPORAL_NAMESPACE",
    "SSO_TASK_QUEUE",
    "SSO_PUBLIC_URL",
    "SSO_BRAND_NAME",
    "SSO_SUPPORT_EMAIL",
    "SSO_EMAIL_BACKEND",
    "SSO_EMAIL_FROM",
    "SSO_SMTP_HOST",
    "SSO_SMTP_PORT",
    "SSO_SMTP_STARTTLS",
    "SSO_SECRET_KEY",
    "SSO_ENCRYPTION_KEYS",
    "SSO_SEAL_PUBLIC_KEY",
    "SSO_CODEC_CORS_ORIGINS",
}
SECRETS = ("SSO_SECRET_KEY", "SSO_ENCRYPTION_KEYS", "SSO_SEAL_PRIVATE_KEY", "POSTGRES_PASSWORD")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ...
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
_SSO_VAR = re.compile(r"\bSSO_[A-Z0-9_]+\b")


def _raw() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def _compose() -> dict:
    data = yaml.safe_load(_raw())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def _command_text(service: dict) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value is not None:
            parts.append(str(value))
    return "\n".join(parts)


def test_services_are_exactly_the_documented_set():
    assert set(_compose()["services"]) == EXPECTED_SERVICES


def test_app_services_share_one_environment_with_all_settings():
    services = _compose()["services"]
    envs = {name: _env(services[name]) for name in APP_SERVICES}
    assert envs["web"] == envs["migrate"]
    # The worker alone also holds the key that opens sealed passwords and codes.
    worker_only = {k: v for k, v in envs["worker"].items() if k not in envs["web"]}
    assert set(worker_only) == {"SSO_SEAL_PRIVATE_KEY"}
    assert {k: v for k, v in envs["worker"].items() if k in envs["web"]} == envs["web"]
    missing = REQUIRED_SSO_SETTINGS - set(envs["web"])
    assert not missing, f"missing SSO settings: {sorted(missing)}"
    assert envs["web"]["SSO_ENV"] == "production"
    # The shared block is a YAML anchor, not three copies.
    raw = _raw()
    assert re.search(r"^x-sso-env:\s*&sso-env\s*$", raw, re.MULTILINE)
    shared = len(re.findall(r"environment:\s*\*sso-env\b", raw))
    merged = len(re.findall(r"<<:\s*\*sso-env\b", raw))
    assert shared + merged == len(APP_SERVICES)


def test_app_service_commands():
    services = _compose()["services"]
    for name in APP_SERVICES:
        assert "build" in services[name], name
    assert _command_text(services["web"]).split() == [
        "sso",
        "api",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert _command_text(services["worker"]).split() == ["sso", "worker"]
    assert _command_text(services["migrate"]).split() == ["sso", "migrate"]
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert "temporal" in depends


def test_secrets_have_no_literal_default():
    raw = _raw()
    seen = set()
    for match in _INTERPOLATION.finditer(raw):
        name, rest = match.group("name"), match.group("rest")
        if name in SECRETS:
            seen.add(name)
            assert rest.startswith(":?"), f"{match.group(0)} must use the ${{{name}:?...}} form (no default)"
    assert seen == set(SECRETS)

    services = _compose()["services"]
    app_env = _env(services["web"])
    for name in ("SSO_SECRET_KEY", "SSO_ENCRYPTION_KEYS"):
        pattern = r"\$\{" + name + r":\?[^}]*\}"
        assert re.fullmatch(pattern, app_env[name]), app_env[name]
    pg_password = r"\$\{POSTGRES_PASSWORD:\?[^}]*\}"
    assert re.fullmatch(pg_password, _env(services["postgres"])["POSTGRES_PASSWORD"])
    assert re.fullmatch(pg_password, _env(services["temporal"])["POSTGRES_PWD"])
    # No service anywhere sets a secret to a literal value.
    for svc_name, service in services.items():
        for key, value in _env(service).items():
            if key in SECRETS or key == "POSTGRES_PWD":
                assert value.startswith("${") and ":?" in value, (svc_name, key)


def test_database_url_uses_psycopg_driver():
    url = _env(_compose()["services"]["web"])["SSO_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://"), url
    assert url.endswith("@postgres:5432/sso"), url


def test_temporal_ui_decodes_through_codec_endpoint():
    env = _env(_compose()["services"]["temporal-ui"])
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TEMPORAL_CODEC_ENDPOINT"].rstrip("/").endswith("/codec")
    assert env["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"].lower() == "false"


def test_search_attributes_are_registered():
    setup = _compose()["services"]["temporal-setup"]
    text = _command_text(setup)
    assert "temporal operator search-attribute create" in text
    assert "--address temporal:7233" in text
    for attribute in ("SsoStep", "SsoStaffId", "SsoOrgId"):
        assert re.search(rf"--name\s+{attribute}\s+--type\s+Keyword\b", text), attribute
    assert "already exist" in text  # re-running is harmless
    assert "temporal" in setup["depends_on"]


def test_deployment_doc_mentions_every_service_and_sso_variable():
    assert DEPLOYMENT_DOC.exists(), "docs/deployment.md is missing"
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    compose = _compose()

    # Whole-name matches: "temporal" inside "temporal-ui" does not count.
    def mentioned(name: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", doc) is not None

    missing_services = sorted(s for s in compose["services"] if not mentioned(s))
    sso_vars = set(_SSO_VAR.findall(_raw()))
    missing_vars = sorted(v for v in sso_vars if not mentioned(v))
    assert not missing_services, f"docs/deployment.md does not mention services: {missing_services}"
    assert not missing_vars, f"docs/deployment.md does not mention variables: {missing_vars}"


def _published(service: dict) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_only_the_web_app_is_published_beyond_this_host():
    """docs/security.md §32: whoever reaches Temporal can terminate and cancel flows (no payload to
    authenticate); the UI and the mail catcher are for operators on this host."""
    services = _compose()["services"]
    assert _published(services["web"]) == ["8000:8000"]
    for name, service in services.items():
        if name == "web":
            continue
        for port in _published(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert any("7233" in port for port in _published(services["temporal"]))


def test_temporal_ui_is_read_only():
    env = _env(_compose()["services"]["temporal-ui"])
    assert env["TEMPORAL_DISABLE_WRITE_ACTIONS"].lower() == "true"
