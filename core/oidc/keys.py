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
# How long a web app process signs from the keys it last read before reading them again (at
# most the publish lead: see KeyStore.signing).
SIGNERS_REREAD = timedelta(seconds=60)


@dataclass(frozen=True)
class Signer:
    alg: str
    kid: str
    signs_from: datetime
    key: AnyKey


@dataclass(frozen=True)
class Signers:
    """The published keys as read at `read_at`, their private keys unsealed."""

    read_at: datetime
    keys: tuple[Signer, ...]

    def fresh(self, now: datetime, reread: timedelta) -> bool:
        return self.read_at <= now < self.read_at + reread


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
    _signers: Signers | None = None

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
        return await self._with_missing(db, now, await self.published(db, now))

    async def _with_missing(
        self, db: AsyncSession, now: datetime, rows: list[OidcSigningKey]
    ) -> list[OidcSigningKey]:
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
        self._signers = None
        return added

    async def signing(self, db: AsyncSession, now: datetime) -> dict[str, tuple[str, AnyKey]]:
        """For each algorithm, the newest key allowed to sign now: (kid, private key).

        The keys are read again at most SIGNERS_REREAD (and at most the publish lead) after
        they were last read, not at every token request. A rotation in another process can't
        be missed: its keys sign from a publish lead after it, by when the keys read before
        it are stale. Keys made here, for an algorithm without one, are not kept until their
        transaction is known to have committed."""
        reread = min(SIGNERS_REREAD, self.settings.oidc_key_publish_lead)
        signers = self._signers
        if signers is None or not signers.fresh(now, reread):
            rows = await self.published(db, now)
            complete = all(any(row.alg == alg for row in rows) for alg in ALGORITHMS)
            rows = await self._with_missing(db, now, rows)
            signers = Signers(
                now, tuple(Signer(row.alg, row.kid, row.signs_from, self._private_key(row)) for row in rows)
            )
            self._signers = signers if complete else None
        chosen: dict[str, Signer] = {}
        for signer in signers.keys:
            if signer.signs_from <= now and (
                signer.alg not in chosen or signer.signs_from > chosen[signer.alg].signs_from
            ):
                chosen[signer.alg] = signer
        return {alg: (signer.kid, signer.key) for alg, signer in chosen.items()}

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
