"""Fixed-window counters shared by every web app instance: in Redis when SSO_REDIS_URL is set,
otherwise in the database."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from core.db import SessionFactory
from core.models import RateCounter, utcnow


class Counter(Protocol):
    async def hit(self, key: str, limit: int, window: timedelta) -> int | None:
        """Counts one event; returns seconds until the window ends when over the limit."""
        ...

    async def undo(self, key: str, window: timedelta) -> None:
        """Takes back one event counted by hit in the current window (never below zero): count
        first, then undo what turned out not to count, so events arriving together cannot all
        slip under the limit."""
        ...

    async def close(self) -> None: ...


class DatabaseCounter:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def undo(self, key: str, window: timedelta) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(RateCounter)
                .where(
                    RateCounter.key == key,
                    RateCounter.window_start > utcnow() - window,
                    RateCounter.count > 0,
                )
                .values(count=RateCounter.count - 1)
            )
            await session.commit()

    async def hit(self, key: str, limit: int, window: timedelta) -> int | None:
        """Single guarded UPDATEs, not read-then-write: events arriving together (at any
        instance) are each counted."""
        for _ in range(3):  # two instances may create the same row at once
            now = utcnow()
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        update(RateCounter)
                        .where(RateCounter.key == key, RateCounter.window_start > now - window)
                        .values(count=RateCounter.count + 1)
                        .returning(RateCounter.count, RateCounter.window_start)
                    )
                ).one_or_none()
                if row is None:  # the window has passed, or none yet: a new one
                    row = (
                        await session.execute(
                            update(RateCounter)
                            .where(RateCounter.key == key, RateCounter.window_start <= now - window)
                            .values(count=1, window_start=now)
                            .returning(RateCounter.count, RateCounter.window_start)
                        )
                    ).one_or_none()
                count, started = (1, now) if row is None else (row[0], row[1])
                if row is None:
                    session.add(RateCounter(key=key, window_start=now, count=1))
                try:
                    await session.commit()
                except IntegrityError:
                    continue
            return _retry_after(count, limit, started + window, now)
        return None

    async def close(self) -> None:
        return None


class RedisCounter:
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url)

    async def hit(self, key: str, limit: int, window: timedelta) -> int | None:
        seconds = max(1, int(window.total_seconds()))
        full = f"sso:rate:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            pipe.expire(full, seconds, nx=True)
            pipe.ttl(full)
            count, _, ttl = await pipe.execute()
        return int(ttl) if int(count) > limit and int(ttl) > 0 else None

    async def undo(self, key: str, window: timedelta) -> None:
        # Only while the window lasts: a DECR on a key gone would make one with no expiry.
        await self._redis.eval(  # type: ignore[misc]
            "if (tonumber(redis.call('get', KEYS[1]) or '0')) > 0 then "
            "return redis.call('decr', KEYS[1]) end return 0",
            1,
            f"sso:rate:{key}",
        )

    async def close(self) -> None:
        await self._redis.aclose()


def _retry_after(count: int, limit: int, window_end: datetime, now: datetime) -> int | None:
    if count <= limit:
        return None
    return max(1, math.ceil((window_end - now).total_seconds()))


def build_counter(redis_url: str | None, sessions: SessionFactory) -> Counter:
    return RedisCounter(redis_url) if redis_url else DatabaseCounter(sessions)
