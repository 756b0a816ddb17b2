"""Process-wide registry of secret values, scrubbed from every log line and problem body.

Masking by field name protects the data we shape ourselves; this registry protects
everything else (exception messages from drivers, reprs of URLs) by value. Every
component that learns a secret (Vault token, passwords, secret-id) registers it.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_LENGTH = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text."""
    global _pattern
    if not value or len(value) < _MIN_LENGTH:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret value replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


SENSITIVE_FIELD_MARKERS = ("password", "secret", "token", "key")


def is_sensitive_field(name: str) -> bool:
    """True if a field name suggests a secret (password, secret, token, key)."""
    lowered = name.lower()
    return any(marker in lowered for marker in SENSITIVE_FIELD_MARKERS)
