"""What `sso dev`'s banner hands a newcomer, made to work on every start on the same data
directory: the development admin API key (kept, so the key from the last run still works)
and the "Try it" steps (for a person the data directory can still onboard).

Development only: `sso dev` refuses any other environment, and the key's file sits beside
dev-secrets.json, readable by its owner alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from core.admin_keys import authenticate, create_admin_key
from core.db import create_engine, session_factory
from core.models import AccountStatus, AdminApiKey, SsoAccount, Staff, utcnow
from core.settings import Settings

DEV_KEY_NAME = "sso-dev"
DEV_KEY_FILE = "dev-admin-key"


@dataclass(frozen=True)
class DevKey:
    key: str
    note: str  # how this key came about, for the banner


@dataclass(frozen=True)
class TryIt:
    """Who the banner's steps onboard: a new person, or one an earlier run created and who
    has not finished their setup (`staff_id`)."""

    email: str
    staff_id: uuid.UUID | None


async def dev_admin_key(settings: Settings, data_dir: Path) -> DevKey:
    """The key of the last run when it still works; otherwise a new one, saying why, with
    the earlier `sso-dev` keys revoked."""
    path = data_dir / DEV_KEY_FILE
    kept = path.read_text().strip() if path.exists() else ""
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            if kept and await authenticate(session, settings, kept) == DEV_KEY_NAME:
                await session.commit()
                return DevKey(kept, f"the same as the last run, kept in {path}")
            revoked = await session.execute(
                update(AdminApiKey)
                .where(AdminApiKey.name == DEV_KEY_NAME, AdminApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            key = await create_admin_key(session, settings, DEV_KEY_NAME)
            await session.commit()
    finally:
        await engine.dispose()
    path.write_text(key + "\n")
    path.chmod(0o600)
    if kept:
        why = f"the key in {path} no longer works"
    elif getattr(revoked, "rowcount", 0):
        why = f"no key was kept in {path}"
    else:
        return DevKey(key, f"new; kept in {path} and used again on every start")
    return DevKey(key, f"new, as {why}; earlier {DEV_KEY_NAME} keys are revoked; kept in {path}")


def try_it_address(number: int) -> str:
    return "jo@example.com" if number == 1 else f"jo+{number}@example.com"


async def try_it(settings: Settings) -> TryIt:
    """The first of jo@example.com, jo+2@example.com, … that is either nobody's yet or
    belongs to someone whose Single Sign-On is not active: the steps then work again."""
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            number = 1
            while True:
                email = try_it_address(number)
                staff_id = await session.scalar(select(Staff.id).where(Staff.external_email_1 == email))
                if staff_id is None:
                    return TryIt(email, None)
                status = await session.scalar(
                    select(SsoAccount.status).where(SsoAccount.staff_id == staff_id)
                )
                if status != AccountStatus.active.value:
                    return TryIt(email, staff_id)
                number += 1
    finally:
        await engine.dispose()
