"""Process-wide registry of secret values, scrubbed from every log line and problem body.

Masking by field name protects the data we shape ourselves; this registry protects
everything else (exception messages from drivers, reprs of URLs) by value. Every
component that learns a secret (Vault token, passwords, secret-id) registers it.

The registry is bounded, because secrets rotate for as long as the process lives:

- a secret registered with an *owner* (the Vault token, one KV secret, the AppRole
  files) replaces that owner's values at its next registration. The replaced values
  are kept for one more generation (a connection opened with the old password may
  still print it while it retires), then forgotten;
- a value registered without an owner that no owner holds goes to a small LRU.

Scrubbing runs on every log line, so it is cheap: nothing to do when the registry is
empty; otherwise a plain substring test per value (C speed) finds the rare line that
holds a secret, and only that line goes through the regex, which is compiled once per
change of the registry, never per line.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

MASK = "***"
_MIN_LENGTH = 4  # shorter values would mask ordinary words
#: values registered without an owner that no owner holds (least recently registered go)
MAX_ANONYMOUS = 64
#: owners remembered (least recently registered go); Vault KV secrets are owners, and
#: their number is bounded by what the service's policy can read, but never trust that
MAX_OWNERS = 128


@dataclass(frozen=True)
class _Generations:
    current: frozenset[str]
    previous: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Snapshot:
    """What :func:`redact` reads: swapped whole on a change, so it needs no lock."""

    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None


_lock = threading.Lock()
_owners: OrderedDict[str, _Generations] = OrderedDict()
_anonymous: OrderedDict[str, None] = OrderedDict()
_snapshot = _Snapshot()


def _usable(values: Iterable[str | None]) -> frozenset[str]:
    return frozenset(v for v in values if v and len(v) >= _MIN_LENGTH)


def register_secret(value: str | None, *, owner: str | None = None) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text.

    With ``owner``, ``value`` becomes that owner's only current secret (see
    :func:`register_secrets`). Without one, it is kept in a bounded LRU unless an
    owner already holds it.
    """
    if owner is not None:
        register_secrets(owner, (value,))
        return
    if not value or len(value) < _MIN_LENGTH:
        return
    with _lock:
        if value in _anonymous:
            _anonymous.move_to_end(value)
            return
        if any(value in g.current or value in g.previous for g in _owners.values()):
            return
        _anonymous[value] = None
        while len(_anonymous) > MAX_ANONYMOUS:
            _anonymous.popitem(last=False)
        _rebuild()


def register_secrets(owner: str, values: Iterable[str | None]) -> None:
    """Make ``values`` the current secrets of ``owner``: the ones they replace stay
    scrubbed until the next change, then are forgotten."""
    fresh = _usable(values)
    with _lock:
        known = _owners.get(owner)
        if known is not None:
            _owners.move_to_end(owner)
            if known.current == fresh:
                return
            _owners[owner] = _Generations(fresh, known.current)
        else:
            _owners[owner] = _Generations(fresh)
            while len(_owners) > MAX_OWNERS:
                _owners.popitem(last=False)
        _rebuild()


def forget_secrets(owner: str) -> None:
    """Drop every value of ``owner`` (a token that was revoked, a client that closed)."""
    with _lock:
        if _owners.pop(owner, None) is not None:
            _rebuild()


def _rebuild() -> None:
    """Recompute the snapshot; called with the lock held, only when something changed."""
    global _snapshot
    values: set[str] = set(_anonymous)
    for generations in _owners.values():
        values |= generations.current | generations.previous
    # Longest first, so a secret that contains another is masked whole.
    ordered = tuple(sorted(values, key=len, reverse=True))
    pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    _snapshot = _Snapshot(ordered, pattern)


def holds_secret(text: str) -> bool:
    """True if ``text`` contains a registered secret value (a substring test per value)."""
    snapshot = _snapshot
    if snapshot.pattern is None or not text:
        return False
    return any(value in text for value in snapshot.values)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret value replaced by ``***``."""
    snapshot = _snapshot
    if snapshot.pattern is None or not text:
        return text
    for value in snapshot.values:
        if value in text:
            return snapshot.pattern.sub(MASK, text)
    return text
