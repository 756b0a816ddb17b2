"""Signup counters in Redis: per day and per email domain, each event counted once.

One Lua script does the dedup and the increments together: if the event's dedup
key exists, nothing; else ``HINCRBY`` on the day's hash, then set the dedup key.
Redis runs a script atomically, so a crash or a competing worker can never leave
an event marked without being counted, or counted without being marked — which a
check-then-increment (two round trips) could. The mark is written last because
Redis does not roll a failing script back: a refused increment (the day's key of
another type) must not leave the event marked as counted.

Keys live under ``REDIS_KEY_PREFIX`` and share the hash tag ``{signups}``, so on a
Redis Cluster the script's keys sit in one slot. A day is one hash (``total`` and
``domain:<domain>`` fields) kept ``WORKER_STATS_RETENTION_DAYS``; a dedup key is
kept ``WORKER_DEDUP_TTL_SECONDS``, which bounds how late a duplicate may come.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from quartstack.integrations.redis.client import RedisClient
from quartstack.worker.events import UserRegistered

_COUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('HINCRBY', KEYS[2], 'total', 1)
if ARGV[3] ~= '' then
    redis.call('HINCRBY', KEYS[2], 'domain:' .. ARGV[3], 1)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
return 1
"""
_DOMAIN_FIELD = "domain:"


def seen_key(redis: RedisClient, event_id: str) -> str:
    return redis.key(f"signups:{{signups}}:seen:{event_id}")


def day_key(redis: RedisClient, day: date) -> str:
    return redis.key(f"signups:{{signups}}:day:{day.isoformat()}")


async def count_signup(
    redis: RedisClient, event: UserRegistered, *, dedup_ttl: int, retention_days: int
) -> bool:
    """Count ``event`` unless it was counted already; True if this call counted it."""
    keys = (seen_key(redis, event.event_id), day_key(redis, event.created_at.date()))
    args = (dedup_ttl, retention_days * 86400, event.email_domain or "")
    counted = await redis.run("count_signup", lambda r: r.eval(_COUNT, 2, *keys, *args))
    return bool(counted)


@dataclass
class SignupStats:
    days: dict[str, int] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.days.values())


async def read_stats(redis: RedisClient, today: date, days: int) -> SignupStats:
    """Counts of the ``days`` days up to ``today`` (UTC), oldest first."""
    wanted = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]

    async def read(client: Any) -> list[dict[bytes | str, bytes | str]]:
        pipeline = client.pipeline(transaction=False)
        for day in wanted:
            pipeline.hgetall(day_key(redis, day))
        result: list[dict[bytes | str, bytes | str]] = await pipeline.execute()
        return result

    stats = SignupStats()
    for day, fields in zip(wanted, await redis.run("read_signup_stats", read), strict=True):
        stats.days[day.isoformat()] = 0
        for raw_name, raw_value in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            value = int(raw_value)
            if name == "total":
                stats.days[day.isoformat()] = value
            elif name.startswith(_DOMAIN_FIELD):
                domain = name.removeprefix(_DOMAIN_FIELD)
                stats.domains[domain] = stats.domains.get(domain, 0) + value
    return stats
