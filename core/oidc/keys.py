"""Token signing keys: generated here, kept sealed with the encryption keyring, published in
the JWKS before they sign and for as long as a token they signed can live."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.codec import keyring_from_settings
from core.models import OidcSigningKey
from core.settings import Settings

ALGORITHMS = ("RS256", "ES256")
DEFAULT_ALGORITHM = "RS256"
AnyKey = RSAKey | ECKey


def _generate(alg: str) -> AnyKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    return RSAKey.generate_key(2048, auto_kid=True)


def _aad(kid: str) -> bytes:
    return f"oidc-signing-key:{kid}".encode()


def longest_token_lifetime(settings: Settings) -> timedelta:
    return max(settings.oidc_access_token_ttl, settings.oidc_id_token_ttl)


@dataclass
class KeyStore:
    """Reads and writes the keys; keeps the private keys it has unsealed, by kid (a kid names
    one key for good), so a token request does not unseal and parse a key each time."""

    settings: Settings
    _private: dict[str, AnyKey] = field(default_factory=dict)
    _public: dict[tuple[str, ...], KeySet] = field(default_factory=dict)

    def _add(self, db: AsyncSession, alg: str, signs_from: datetime, now: datetime) -> OidcSigningKey:
        key = _generate(alg)
        kid = str(key.kid)
        sealed = keyring_from_settings(self.settings).seal(
            json.dumps(key.as_dict(private=True)).encode(), _aad(kid)
        )
        row = OidcSigningKey(
            kid=kid,
            alg=alg,
            public_jwk={**key.as_dict(private=False), "alg": alg, "use": "sig"},
            private_sealed=sealed,
            signs_from=signs_from,
            created_at=now,
        )
        db.add(row)
        return row

    async def published(self, db: AsyncSession, now: datetime) -> list[OidcSigningKey]:
        rows = (await db.scalars(select(OidcSigningKey).order_by(OidcSigningKey.created_at))).all()
        return [row for row in rows if row.retire_at is None or row.retire_at > now]

    async def ensure(self, db: AsyncSession, now: datetime) -> list[OidcSigningKey]:
        """The published keys, after making a first key for any algorithm without one: it signs
        at once, since nobody can have cached a JWKS without it."""
        rows = await self.published(db, now)
        missing = [alg for alg in ALGORITHMS if not any(row.alg == alg for row in rows)]
        if missing:
            rows += [self._add(db, alg, now, now) for alg in missing]
            await db.flush()
        return rows

    async def rotate(self, db: AsyncSession, now: datetime) -> list[OidcSigningKey]:
        """A new key per algorithm, published now and signing after the publish lead; the keys
        it replaces leave the JWKS once the last token they may sign has expired."""
        current = await self.ensure(db, now)
        signs_from = now + self.settings.oidc_key_publish_lead
        retire_at = signs_from + longest_token_lifetime(self.settings)
        for row in current:
            if row.retire_at is None:
                row.retire_at = retire_at
        added = [self._add(db, alg, signs_from, now) for alg in ALGORITHMS]
        await db.flush()
        return added

    async def signing(self, db: AsyncSession, now: datetime) -> dict[str, tuple[str, AnyKey]]:
        """For each algorithm, the newest key allowed to sign now: (kid, private key)."""
        chosen: dict[str, OidcSigningKey] = {}
        for row in await self.ensure(db, now):
            if row.signs_from <= now and (
                row.alg not in chosen or row.signs_from > chosen[row.alg].signs_from
            ):
                chosen[row.alg] = row
        return {alg: (row.kid, self._private_key(row)) for alg, row in chosen.items()}

    def verification_keys(self, rows: list[OidcSigningKey]) -> KeySet:
        """The published keys as a key set, parsed once per set of keys."""
        kids = tuple(row.kid for row in rows)
        keys = self._public.get(kids)
        if keys is None:
            self._public.clear()  # a rotation: the earlier set is never asked for again
            keys = self._public[kids] = verification_keys(rows)
        return keys

    def _private_key(self, row: OidcSigningKey) -> AnyKey:
        key = self._private.get(row.kid)
        if key is None:
            data = json.loads(keyring_from_settings(self.settings).unseal(row.private_sealed, _aad(row.kid)))
            key = self._private[row.kid] = (
                ECKey.import_key(data) if row.alg == "ES256" else RSAKey.import_key(data)
            )
        return key


def jwks(rows: list[OidcSigningKey]) -> dict[str, list[dict[str, object]]]:
    return {"keys": [dict(row.public_jwk) for row in rows]}


def verification_keys(rows: list[OidcSigningKey]) -> KeySet:
    return KeySet.import_key_set(jwks(rows))  # type: ignore[arg-type]
