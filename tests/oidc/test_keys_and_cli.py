"""Signing keys (sealed with the keyring, published before they sign, retired after the
longest token lifetime) and the `sso clients create` and `sso signing-keys rotate` commands.
docs/security.md §33 and §35."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

import cli
from core.codec import keyring_from_settings
from core.db import SessionFactory, create_engine, session_factory
from core.models import OidcClient, OidcSigningKey, utcnow
from core.oidc.clients import secret_hash
from core.oidc.keys import KeyStore, jwks
from core.settings import get_settings
from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SEAL_PUBLIC_KEY, TEST_SECRET_KEY, make_settings
from tests.support.sql import statements_naming


@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_publishes_before_signing_and_retires_after_the_longest_token(
    sessions: SessionFactory,
) -> None:
    settings = make_settings()
    store = KeyStore(settings)
    now = utcnow()
    async with sessions() as db:
        first = await store.signing(db, now)
        assert set(first) == {"RS256", "ES256"}
        added = await store.rotate(db, now)
        new_kids = {row.kid for row in added}
        published = {row.kid for row in await store.published(db, now)}
        assert new_kids <= published and {kid for kid, _ in first.values()} <= published
        # Not signing yet: apps may still hold a JWKS without the new keys.
        assert await store.signing(db, now) == first
        later = now + settings.oidc_key_publish_lead
        assert {kid for kid, _ in (await store.signing(db, later)).values()} == new_kids
        # The old keys stay published while a token they signed can still be checked.
        retire = later + max(settings.oidc_access_token_ttl, settings.oidc_id_token_ttl)
        still = {row.kid for row in await store.published(db, retire - timedelta(seconds=1))}
        assert {kid for kid, _ in first.values()} <= still
        gone = {row.kid for row in await store.published(db, retire)}
        assert gone == new_kids
        rows = (await db.scalars(select(OidcSigningKey))).all()
        for row in rows:
            private = json.loads(
                keyring_from_settings(settings).unseal(
                    row.private_sealed, f"oidc-signing-key:{row.kid}".encode()
                )
            )
            assert private["d"] not in row.private_sealed and "d" not in row.public_jwk
        assert not any("d" in key for key in jwks(list(rows))["keys"])
        await db.commit()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_web_process_reads_its_keys_once_a_minute_and_signs_with_another_processs_rotation_on_time(
    sessions: SessionFactory,
) -> None:
    settings = make_settings()
    web, command = KeyStore(settings), KeyStore(settings)  # two processes: the web app, `sso`
    now = utcnow()
    async with sessions() as db:
        made = await web.signing(db, now)
        await db.rollback()  # the keys it made were never stored: not kept either
    async with sessions() as db:
        first = await web.signing(db, now)
        assert {kid for kid, _ in first.values()}.isdisjoint(kid for kid, _ in made.values())
        await db.commit()
    async with sessions() as db:  # kept once read back as stored
        assert await web.signing(db, now) == first
    with statements_naming("oidc_signing_keys") as reads:
        async with sessions() as db:
            assert await web.signing(db, now + timedelta(seconds=30)) == first
        assert reads == []  # held, not read again
        async with sessions() as db:
            added = await command.rotate(db, now + timedelta(seconds=40))
            await db.commit()
        async with sessions() as db:
            # Read again a minute on, but the new keys don't sign before the publish lead.
            assert await web.signing(db, now + timedelta(seconds=61)) == first
            assert len(reads) > 1
            signs_from = now + timedelta(seconds=40) + settings.oidc_key_publish_lead
            assert await web.signing(db, signs_from - timedelta(seconds=1)) == first
            new = {kid for kid, _ in (await web.signing(db, signs_from)).values()}
            assert new == {row.kid for row in added}


def test_clients_create_and_signing_keys_rotate_commands(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "SSO_ENV": "test",
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_SEAL_PUBLIC_KEY": TEST_SEAL_PUBLIC_KEY,
        "SSO_DATABASE_URL": sqlite_url,
        "SSO_PUBLIC_URL": "https://sso.example.test",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        cli.main(
            ["clients", "create", "--name", "Valuations", "--redirect-uri", "https://val.example.test/cb"]
        )
        out = capsys.readouterr().out
        client_id = out.split("client_id: ")[1].split()[0]
        secret = out.split("store it now): ")[1].split()[0]
        assert out.count(secret) == 1
        with pytest.raises(SystemExit, match="must use https"):
            cli.main(["clients", "create", "--name", "Bad", "--redirect-uri", "http://val.example.test/cb"])
        cli.main(["signing-keys", "rotate"])
        rotated = capsys.readouterr().out
        assert "RS256 key" in rotated and "ES256 key" in rotated
    finally:
        get_settings.cache_clear()

    async def check() -> None:
        settings = make_settings(database_url=sqlite_url)
        engine = create_engine(sqlite_url)
        async with session_factory(engine)() as db:
            row = await db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
            assert row is not None and row.secret_hash == secret_hash(settings, secret)
            assert (
                secret not in json.dumps(row.registration)
                and (await db.scalar(select(OidcClient).where(OidcClient.client_name == "Bad"))) is None
            )
            assert len((await db.scalars(select(OidcSigningKey))).all()) == 4
        await engine.dispose()

    asyncio.run(check())
