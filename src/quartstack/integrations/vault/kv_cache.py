"""The in-process cache of Vault KV reads: entries expire, and the cache has a size.

Secret names come from requests (``/examples/vault/secret/{name}``), so a cache that
only grows would keep every name ever read for the life of the process. Entries
expire after the TTL, and beyond ``max_entries`` the least recently used goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

#: Far more than the secrets one service reads; small enough to never matter in memory.
DEFAULT_MAX_ENTRIES = 256


class KvCache:
    """Secret name → data, with a TTL and least-recently-used eviction (event loop only)."""

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> dict[str, Any] | None:
        """The data cached for ``name``, or None if absent or expired (then dropped)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, data: dict[str, Any]) -> None:
        """Cache ``data`` for the TTL (a TTL of 0 disables the cache)."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[name] = (time.monotonic() + self.ttl, data)
        self._entries.move_to_end(name)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
