"""The in-process tier's rules, with a fake clock (the Redis side is in test_two_tier_cache)."""

from __future__ import annotations

import pytest

import redis as redis_sync
from quartstack.integrations.redis.local_tier import LocalTier, redis_glob
from tests.support.leftovers import unique_name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tier(ttl: float = 2.0, entries: int = 10) -> tuple[LocalTier, Clock]:
    clock = Clock()
    tier = LocalTier(ttl, entries, liveness=3.0, clock=clock)
    tier.go_online()
    return tier, clock


def test_an_entry_expires_at_the_local_ttl_or_its_redis_copy_whichever_is_first():
    tier, clock = _tier(ttl=2.0)
    tier.put("a", {"v": 1}, shared_ttl=300, generation=tier.generation)
    tier.put("b", {"v": 2}, shared_ttl=0.5, generation=tier.generation)
    clock.now += 0.4
    tier.heard()
    assert tier.get("a") is not None and tier.get("b") is not None
    clock.now += 0.2
    tier.heard()
    assert tier.get("b") is None  # its Redis copy is gone
    clock.now += 1.5
    tier.heard()
    assert tier.get("a") is None  # 2.1 s: past the local TTL


def test_a_fill_that_read_before_an_invalidation_is_not_kept():
    tier, _ = _tier()
    generation = tier.generation
    tier.invalidate("resp:/other")
    tier.put("resp:/x", {"v": "old"}, shared_ttl=300, generation=generation)
    assert tier.get("resp:/x") is None


def test_silence_beyond_the_liveness_window_switches_the_tier_off_and_empties_it():
    tier, clock = _tier()
    tier.put("a", {"v": 1}, shared_ttl=300, generation=tier.generation)
    clock.now += 1.0
    assert tier.get("a") is not None
    clock.now += 2.5  # 3.5 s since the last word from Redis
    assert tier.get("a") is None and not tier.usable() and len(tier) == 0
    tier.put("a", {"v": 1}, shared_ttl=300, generation=tier.generation)
    assert len(tier) == 0  # offline: nothing is stored either


@pytest.mark.parametrize(("ttl", "entries"), [(0, 10), (2.0, 0)])
def test_zero_ttl_or_size_turns_the_tier_off(ttl, entries):
    tier, _ = _tier(ttl, entries)
    assert not tier.enabled
    tier.put("a", {"v": 1}, shared_ttl=300, generation=tier.generation)
    assert tier.get("a") is None


PATTERNS = [
    "/examples/vault/*",
    "/examples/vault/secret/s?",
    "/examples/vault/secret/s[0-2]",
    "/examples/vault/secret/s[^0-2]",
    "/examples/vault/secret/s[ab]*",
    "/examples/vault/secret/\\*",
    "/health/all",
    "*",
]
KEYS = [
    "/examples/vault/secret/s1",
    "/examples/vault/secret/s5",
    "/examples/vault/secret/sa-x",
    "/examples/vault/secret/*",
    "/examples/vault/secret/s12",
    "/health/all",
]


def test_glob_matching_agrees_with_redis_scan_match():
    """The local tier drops exactly what SCAN MATCH deleted in Redis."""
    prefix = unique_name("-") + ":"
    client = redis_sync.Redis(port=6379, decode_responses=True)
    try:
        for key in KEYS:
            client.set(prefix + key, "1", ex=60)
        for pattern in PATTERNS:
            in_redis = {k[len(prefix) :] for k in client.scan_iter(match=prefix + pattern)}
            local = {k for k in KEYS if redis_glob(pattern)(k)}
            assert local == in_redis, pattern
    finally:
        client.delete(*(prefix + key for key in KEYS))
        client.close()
