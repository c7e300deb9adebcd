"""Fixed-window counters shared by every web app instance: in Redis when SSO_REDIS_URL is set,
otherwise in the database."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.db import SessionFactory
from core.models import RateCounter, utcnow


class Counter(Protocol):
    async def hit(self, key: str, limit: int, window: timedelta) -> int | None:
        """Counts one event; returns seconds until the window ends when over the limit."""
        ...

    async def peek(self, key: str, limit: int, window: timedelta) -> int | None:
        """Like hit, without counting."""
        ...

    async def close(self) -> None: ...


class DatabaseCounter:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def hit(self, key: str, limit: int, window: timedelta) -> int | None:
        return await self._count(key, limit, window, add=1)

    async def peek(self, key: str, limit: int, window: timedelta) -> int | None:
        # Over the limit if one more event would be.
        return await self._count(key, limit - 1, window, add=0)

    async def _count(self, key: str, limit: int, window: timedelta, add: int) -> int | None:
        for _ in range(3):  # two instances may create the same row at once
            now = utcnow()
            async with self._sessions() as session:
                row = await session.scalar(
                    select(RateCounter).where(RateCounter.key == key).with_for_update())
                if row is None or row.window_start + window <= now:
                    if row is None:
                        row = RateCounter(key=key, window_start=now, count=0)
                        session.add(row)
                    row.window_start, row.count = now, 0
                row.count += add
                count, started = row.count, row.window_start
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

    async def peek(self, key: str, limit: int, window: timedelta) -> int | None:
        full = f"sso:rate:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(full)
            pipe.ttl(full)
            count, ttl = await pipe.execute()
        return int(ttl) if count is not None and int(count) >= limit and int(ttl) > 0 else None

    async def close(self) -> None:
        await self._redis.aclose()


def _retry_after(count: int, limit: int, window_end: datetime, now: datetime) -> int | None:
    if count <= limit:
        return None
    return max(1, math.ceil((window_end - now).total_seconds()))


def build_counter(redis_url: str | None, sessions: SessionFactory) -> Counter:
    return RedisCounter(redis_url) if redis_url else DatabaseCounter(sessions)
