"""Temporal client settings: TLS, mTLS and API keys (docs/security.md §32), and our identities."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from core.temporal_client import identity, tls_config
from tests.support.config import make_settings


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("ca", "cert", "key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(f"-----BEGIN {name}-----\n".encode())
    return files


def test_plain_by_default() -> None:
    assert tls_config(make_settings()) is False


def test_tls_with_system_roots() -> None:
    assert tls_config(make_settings(temporal_tls=True)) == TLSConfig()


def test_mtls_reads_the_files(pem: dict[str, Path]) -> None:
    config = tls_config(
        make_settings(
            temporal_tls_ca=str(pem["ca"]),
            temporal_tls_cert=str(pem["cert"]),
            temporal_tls_key=str(pem["key"]),
        )
    )
    assert config == TLSConfig(
        server_root_ca_cert=b"-----BEGIN ca-----\n",
        client_cert=b"-----BEGIN cert-----\n",
        client_private_key=b"-----BEGIN key-----\n",
    )


def test_an_api_key_turns_tls_on() -> None:
    settings = make_settings(temporal_api_key="k" * 40)
    assert tls_config(settings) is True
    assert "k" * 40 not in repr(settings)


@pytest.mark.parametrize("given", [{"temporal_tls_cert": "cert"}, {"temporal_tls_key": "key"}])
def test_a_certificate_needs_its_key(pem: dict[str, Path], given: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="go together"):
        make_settings(**{k: str(pem[v]) for k, v in given.items()})


def test_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SSO_TEMPORAL_TLS_CA"):
        make_settings(temporal_tls_ca=str(tmp_path / "missing.pem"))


def test_empty_values_are_unset() -> None:
    settings = make_settings(temporal_tls_ca="", temporal_api_key="")
    assert settings.temporal_tls_ca is None and settings.temporal_api_key is None


def test_identities_name_our_clients() -> None:
    assert identity("worker").endswith(" sso-worker")
    assert identity("web").split("@")[0].isdigit()  # the SDK's <pid>@<host>, kept first
