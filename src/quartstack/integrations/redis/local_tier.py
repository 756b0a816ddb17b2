"""The in-process tier of the response cache: a small LRU in front of Redis.

A hit here costs no network round trip and no decoding, which is what makes a cached
route nearly as cheap as ``/health/``. It may only serve what another replica could
not have invalidated unseen: every entry lives at most ``RESPONSE_CACHE_LOCAL_TTL_SECONDS``
(and never past its Redis copy), and the tier is switched off (and emptied) while the
invalidation subscription is not known to be alive, so a missed invalidation costs at
most one local TTL of staleness.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(slots=True)
class LocalEntry:
    """A rendered response kept in memory; times are ``time.monotonic()`` values."""

    entry: dict[str, Any]
    expires: float  # this copy: min(now + local TTL, shared_expires)
    shared_expires: float  # the Redis copy's: what ``max-age`` counts down to


class LocalTier:
    """Bounded LRU with a short TTL, usable only while invalidations can reach it.

    ``generation`` changes on every invalidation and whenever the subscription drops:
    a fill that read Redis before the change (its value may be the invalidated one)
    is not stored.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        liveness: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.liveness = liveness  # seconds without a word from Redis before going dark
        self.clock = clock
        self.generation = 0
        self._entries: OrderedDict[str, LocalEntry] = OrderedDict()
        self._online = False
        self._heard = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def usable(self) -> bool:
        """Enabled, subscribed, and the subscription answered within ``liveness``."""
        if not (self._online and self.enabled):
            return False
        if self.clock() - self._heard > self.liveness:
            self.go_offline()  # silent connection: assume invalidations are being missed
            return False
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> LocalEntry | None:
        if not self._entries or not self.usable():
            return None
        found = self._entries.get(key)
        if found is None:
            return None
        if found.expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found

    def put(self, key: str, entry: dict[str, Any], shared_ttl: float, generation: int) -> None:
        """Keep ``entry`` (whose Redis copy lives ``shared_ttl`` more seconds) unless an
        invalidation happened since ``generation`` was read, or the tier is off."""
        if generation != self.generation or shared_ttl <= 0 or not self.usable():
            return
        now = self.clock()
        shared_expires = now + shared_ttl
        self._entries[key] = LocalEntry(entry, min(now + self.ttl, shared_expires), shared_expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, pattern: str | None = None) -> None:
        """Drop the keys matching the Redis glob ``pattern`` (all when None)."""
        self.generation += 1
        if pattern is None:
            self._entries.clear()
            return
        match = redis_glob(pattern)
        for key in [k for k in self._entries if match(k)]:
            del self._entries[key]

    # --- the subscriber reports here -----------------------------------------------------
    def go_online(self) -> None:
        """Subscribed: start empty (anything from before may have missed a message)."""
        self.invalidate()
        self._online = True
        self._heard = self.clock()

    def heard(self) -> None:
        self._heard = self.clock()

    def go_offline(self) -> None:
        self._online = False
        self.invalidate()


@lru_cache(maxsize=256)
def redis_glob(pattern: str) -> Callable[[str], bool]:
    """A matcher with Redis's glob rules (``*``, ``?``, ``[a-z]``, ``[^x]``, ``\\`` escapes),
    so a replica drops exactly the keys SCAN MATCH deleted from Redis."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1)
            if end < 0:
                out.append(re.escape(pattern[i:]))  # Redis: an unclosed class runs to the end
                break
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            parts = []
            j = 0
            while j < len(body):
                if body[j] == "\\" and j + 1 < len(body):
                    parts.append(re.escape(body[j + 1]))
                    j += 2
                elif j + 2 < len(body) and body[j + 1] == "-":
                    low, high = sorted((body[j], body[j + 2]))
                    parts.append(f"{re.escape(low)}-{re.escape(high)}")
                    j += 3
                else:
                    parts.append(re.escape(body[j]))
                    j += 1
            out.append(("[^" if negate else "[") + "".join(parts) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    try:
        compiled = re.compile("".join(out), re.DOTALL)
    except re.error:  # a class Redis reads some odd way ("[]"): dropping too much is safe
        return lambda _key: True
    return lambda key: compiled.fullmatch(key) is not None
