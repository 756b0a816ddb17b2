"""Masking of secrets in data we return: by field name, and passwords inside URLs.

:mod:`quartstack.redaction` scrubs secret *values* the process has learned; this
module decides which *fields* are secret by their name, and finds the password
part of URLs (``postgresql://user:pw@host``) wherever a string holds one, since a
DSN in a field called ``primary`` is as secret as one called ``dsn``.
"""

from __future__ import annotations

import re
from typing import Any

from quartstack.redaction import MASK, redact

#: Substrings of a field name that make its value secret (case-insensitive).
SENSITIVE_NAME_MARKERS = (
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "private_key",
    "credential",
    "dsn",
    "url",
)
# "uri" as a substring would hit "security" or "during": only as a whole word.
_SENSITIVE_NAME = re.compile(
    "|".join(SENSITIVE_NAME_MARKERS) + r"|(?:^|[^a-z])uris?(?:$|[^a-z])", re.IGNORECASE
)
_CAMEL_URI = re.compile(r"[a-z0-9]Uris?(?:$|[^a-z])")

# scheme://user:password@host — the password runs to the last "@" before the path,
# so an unencoded "@" in it does not leave its tail visible.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*:)(?P<password>[^\s/?#]*)@"
)


def is_sensitive_field(name: str) -> bool:
    """True if a field name suggests a secret (password, pass, pwd, secret, token, key,
    credential, dsn, url, uri...)."""
    return bool(_SENSITIVE_NAME.search(name) or _CAMEL_URI.search(name))


def mask_url_passwords(text: str) -> str:
    """``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: m["prefix"] + MASK + "@", text)


def url_passwords(text: str) -> list[str]:
    """The passwords embedded in URLs inside ``text`` (to register them for scrubbing)."""
    if "://" not in text:
        return []
    return [m["password"] for m in _URL_PASSWORD.finditer(text) if m["password"]]


def mask_text(text: str) -> str:
    """A string as it may leave the process: URL passwords and known secrets masked."""
    return redact(mask_url_passwords(text))


def mask(data: Any) -> Any:
    """Mask sensitive fields at any depth and secrets inside strings; other values
    keep their JSON type."""
    if isinstance(data, dict):
        return {
            key: MASK if is_sensitive_field(str(key)) else mask(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [mask(item) for item in data]
    if isinstance(data, str):
        return mask_text(data)
    return data
